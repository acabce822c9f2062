//! Harness for Ferry's end-to-end tests: the shared real servers (started by
//! `scripts/test-servers.sh`), unique buckets, containers, directories and Vault paths per
//! test, data sets, and independent cross-checks (SHA-256 of trees, `rclone check`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};

pub mod dropbox;
pub mod gdrive;
pub mod google_token;
pub mod graph;
pub mod proxy;

/// Serves the router `app` makes (given its own address) on a free loopback port, on a
/// thread of its own so that async tests can start one too; it stops when the returned
/// sender is dropped. `name` is for the panic if it cannot start.
pub fn serve_on_own_thread(
    name: &str,
    app: impl FnOnce(std::net::SocketAddr) -> axum::Router + Send + 'static,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (ready, address) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
            let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let app = app(address);
            let _ = ready.send(address);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    let address = address.recv().unwrap_or_else(|e| panic!("the {name} stand-in did not start: {e}"));
    (address, stop)
}

/// A local stand-in of a drive's REST API, as the conformance suite uses one: where a binding
/// reaches it, and what it holds (instead of an rclone remote, which cannot reach it).
pub trait StandIn: Send + Sync {
    /// The API root a binding names (`apiEndpoint`).
    fn api_endpoint(&self) -> String;
    /// Every file and its content, by path from the drive's root (no leading `/`).
    fn files(&self) -> BTreeMap<String, Vec<u8>>;
    /// Puts a file, as another client of the drive would.
    fn put(&self, path: &str, content: &[u8]);
}

macro_rules! stand_in {
    ($type:ty) => {
        impl StandIn for $type {
            fn api_endpoint(&self) -> String {
                <$type>::api_endpoint(self)
            }
            fn files(&self) -> BTreeMap<String, Vec<u8>> {
                <$type>::files(self)
            }
            fn put(&self, path: &str, content: &[u8]) {
                <$type>::put(self, path, content)
            }
        }
    };
}

stand_in!(graph::GraphStandIn);
stand_in!(dropbox::DropboxStandIn);
stand_in!(gdrive::DriveStandIn);

/// The shared servers, from the environment `scripts/test-servers.sh start` prints.
#[derive(Clone, Debug)]
pub struct Servers {
    /// OpenBao's address.
    pub vault_address: String,
    /// OpenBao's root token.
    pub vault_token: String,
    /// SeaweedFS's S3 endpoint.
    pub s3_endpoint: String,
    /// S3 access key.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// The rclone binary.
    pub rclone: PathBuf,
    /// Azurite (Azure Blob), when `FERRY_TEST_AZURE_ENDPOINT` is set.
    pub azure: Option<Azure>,
    /// `rclone serve webdav`, when `FERRY_TEST_WEBDAV_ENDPOINT` is set.
    pub webdav: Option<WebDav>,
    /// fake-gcs-server (GCS JSON API), when `FERRY_TEST_GCS_ENDPOINT` is set.
    pub gcs: Option<Gcs>,
    /// OpenSSH's sshd, when `FERRY_TEST_SFTP_PORT` is set.
    pub sftp: Option<Sftp>,
}

/// Azurite's Blob service and its development account.
#[derive(Clone, Debug)]
pub struct Azure {
    /// The account's Blob endpoint, path style: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    /// The storage account's name (`devstoreaccount1`).
    pub account: String,
    /// The account's shared key (base64; Azurite's well-known development key).
    pub key: String,
}

/// `rclone serve webdav` over a scratch directory, with basic authentication.
#[derive(Clone, Debug)]
pub struct WebDav {
    /// The server's root URL: `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The basic-auth user.
    pub user: String,
    /// The basic-auth password.
    pub password: String,
}

/// fake-gcs-server, speaking the GCS JSON API over plain HTTP without authentication.
#[derive(Clone, Debug)]
pub struct Gcs {
    /// The server's root URL (`http://127.0.0.1:PORT`; the JSON API is under `/storage/v1`).
    pub endpoint: String,
}

/// OpenSSH's sshd on loopback, for one account that may only use SFTP.
#[derive(Clone, Debug)]
pub struct Sftp {
    /// The address (`127.0.0.1`).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The account.
    pub user: String,
    /// The account's password.
    pub password: String,
    /// The account's private key (OpenSSH format, no passphrase).
    pub key_file: PathBuf,
    /// The server's host key (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// A directory the account owns, where tests make theirs.
    pub root: String,
}

impl Sftp {
    /// The `knownHosts` line for this server at `host:port` (a proxy's port, say).
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        if port == 22 { format!("{host} {}", self.host_key) } else { format!("[{host}]:{port} {}", self.host_key) }
    }
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test-all.sh, or eval \"$(scripts/test-servers.sh start)\" first")
    })
}

/// The shared servers; panics with instructions when they were not started.
pub fn servers() -> Servers {
    let optional = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    Servers {
        vault_address: required("FERRY_TEST_VAULT_ADDR"),
        vault_token: required("FERRY_TEST_VAULT_TOKEN"),
        s3_endpoint: required("FERRY_TEST_S3_ENDPOINT"),
        s3_access_key: required("FERRY_TEST_S3_ACCESS_KEY"),
        s3_secret_key: required("FERRY_TEST_S3_SECRET_KEY"),
        rclone: PathBuf::from(required("FERRY_TEST_RCLONE")),
        azure: optional("FERRY_TEST_AZURE_ENDPOINT").map(|endpoint| Azure {
            endpoint,
            account: required("FERRY_TEST_AZURE_ACCOUNT"),
            key: required("FERRY_TEST_AZURE_KEY"),
        }),
        webdav: optional("FERRY_TEST_WEBDAV_ENDPOINT").map(|endpoint| WebDav {
            endpoint,
            user: required("FERRY_TEST_WEBDAV_USER"),
            password: required("FERRY_TEST_WEBDAV_PASSWORD"),
        }),
        gcs: optional("FERRY_TEST_GCS_ENDPOINT").map(|endpoint| Gcs { endpoint }),
        sftp: optional("FERRY_TEST_SFTP_PORT").map(|port| Sftp {
            host: required("FERRY_TEST_SFTP_HOST"),
            port: port.parse().unwrap_or_else(|_| panic!("FERRY_TEST_SFTP_PORT {port:?} is not a port")),
            user: required("FERRY_TEST_SFTP_USER"),
            password: required("FERRY_TEST_SFTP_PASSWORD"),
            key_file: PathBuf::from(required("FERRY_TEST_SFTP_KEY_FILE")),
            host_key: required("FERRY_TEST_SFTP_HOST_KEY"),
            root: required("FERRY_TEST_SFTP_ROOT"),
        }),
    }
}

#[track_caller]
fn absent(server: &str, variable: &str) -> ! {
    panic!(
        "{variable} is not set, so there is no {server}: run the suite with scripts/test-all.sh, or eval \"$(scripts/test-servers.sh start)\" first"
    )
}

/// A name no other test (or test process) uses: for buckets, Vault paths, directories.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

/// A unique name that is also a valid Azure container and GCS bucket name: 3–63 characters of
/// lowercase letters, digits and single hyphens, starting and ending with a letter or digit.
fn unique_dns_name(prefix: &str) -> String {
    let mut clean = String::new();
    for c in prefix.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (clean.is_empty() || clean.ends_with('-'))) && clean.len() < 30 {
            clean.push(c);
        }
    }
    let clean = clean.trim_end_matches('-');
    unique(if clean.is_empty() { "t" } else { clean })
}

/// `value` quoted for an rclone connection string (`:backend,option='value':path`).
fn rclone_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Servers {
    /// An rclone remote string for a bucket (or `bucket/path`).
    pub fn s3_remote(&self, bucket_path: &str) -> String {
        format!(
            ":s3,provider=Other,access_key_id={},secret_access_key={},endpoint='{}',region=us-east-1,force_path_style=true:{bucket_path}",
            self.s3_access_key, self.s3_secret_key, self.s3_endpoint
        )
    }

    /// Runs rclone (with the image's `AWS_CA_BUNDLE`, which breaks its S3 client, removed).
    pub fn rclone(&self, arguments: &[&str]) -> Output {
        run(Command::new(&self.rclone).args(arguments).env_remove("AWS_CA_BUNDLE").args(["--low-level-retries", "3"]))
    }

    /// Puts one S3 object with exactly this key (rclone would clean some keys up first).
    pub fn put_object_exactly(&self, bucket: &str, key: &str, body: &Path) {
        run(Command::new("curl")
            .args(["-sf", "--path-as-is", "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{}:{}", self.s3_access_key, self.s3_secret_key)])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-X", "PUT", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg(format!("{}/{bucket}/{key}", self.s3_endpoint)));
    }

    /// Creates a new, empty bucket with a unique name and returns the name.
    pub fn bucket(&self, prefix: &str) -> String {
        let name = unique(prefix).to_lowercase();
        self.rclone(&["mkdir", &self.s3_remote(&name)]);
        name
    }

    /// Azurite's details; panics with instructions when it was not started.
    #[track_caller]
    pub fn azure(&self) -> &Azure {
        match &self.azure {
            Some(details) => details,
            None => absent("Azurite", "FERRY_TEST_AZURE_ENDPOINT"),
        }
    }

    /// The WebDAV server's details; panics with instructions when it was not started.
    #[track_caller]
    pub fn webdav(&self) -> &WebDav {
        match &self.webdav {
            Some(details) => details,
            None => absent("WebDAV server", "FERRY_TEST_WEBDAV_ENDPOINT"),
        }
    }

    /// fake-gcs-server's details; panics with instructions when it was not started.
    #[track_caller]
    pub fn gcs(&self) -> &Gcs {
        match &self.gcs {
            Some(details) => details,
            None => absent("GCS server", "FERRY_TEST_GCS_ENDPOINT"),
        }
    }

    /// sshd's details; panics with instructions when it was not started.
    #[track_caller]
    pub fn sftp(&self) -> &Sftp {
        match &self.sftp {
            Some(details) => details,
            None => absent("SFTP server", "FERRY_TEST_SFTP_PORT"),
        }
    }

    /// An rclone remote string for a path under the SFTP account's test root (`directory/path`).
    pub fn sftp_remote(&self, path: &str) -> String {
        let sftp = self.sftp();
        // rclone checks the host key too; it reads it from a file, written once per process.
        static KNOWN_HOSTS: OnceLock<PathBuf> = OnceLock::new();
        let known_hosts = KNOWN_HOSTS.get_or_init(|| {
            let file = std::env::temp_dir().join(unique("ferry-known-hosts"));
            std::fs::write(&file, format!("{}\n", sftp.known_hosts_line(&sftp.host, sftp.port)))
                .unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
            file
        });
        format!(
            ":sftp,host={},port={},user={},key_file={},known_hosts_file={},shell_type=none:{}/{path}",
            rclone_quote(&sftp.host),
            sftp.port,
            rclone_quote(&sftp.user),
            rclone_quote(&sftp.key_file.to_string_lossy()),
            rclone_quote(&known_hosts.to_string_lossy()),
            sftp.root
        )
    }

    /// A fresh directory name under the SFTP test root (made by whatever writes there first).
    pub fn sftp_directory(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.rclone(&["mkdir", &self.sftp_remote(&name)]);
        name
    }

    /// An rclone remote string for an Azurite container (or `container/path`).
    pub fn azure_remote(&self, container_path: &str) -> String {
        let azure = self.azure();
        format!(
            ":azureblob,account={},key={},endpoint={}:{container_path}",
            rclone_quote(&azure.account),
            rclone_quote(&azure.key),
            rclone_quote(&azure.endpoint)
        )
    }

    /// Creates a new, empty Azurite container with a unique name and returns the name.
    pub fn azure_container(&self, prefix: &str) -> String {
        let name = unique_dns_name(prefix);
        self.rclone(&["mkdir", &self.azure_remote(&name)]);
        name
    }

    /// An rclone remote string for a path on the WebDAV server (`directory/path`, no leading `/`).
    pub fn webdav_remote(&self, path: &str) -> String {
        static OBSCURED: OnceLock<(String, String)> = OnceLock::new();
        let webdav = self.webdav();
        // rclone wants the password obscured (`rclone obscure`); do it once per process.
        let (password, obscured) = OBSCURED.get_or_init(|| {
            let output = self.rclone(&["obscure", &webdav.password]);
            (webdav.password.clone(), String::from_utf8_lossy(&output.stdout).trim().to_owned())
        });
        assert_eq!(password, &webdav.password, "the WebDAV password changed within one test process");
        format!(
            ":webdav,url={},vendor=rclone,user={},pass={}:{path}",
            rclone_quote(&webdav.endpoint),
            rclone_quote(&webdav.user),
            rclone_quote(obscured)
        )
    }

    /// Creates a new, empty top-level directory on the WebDAV server and returns its name.
    pub fn webdav_directory(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.rclone(&["mkdir", &self.webdav_remote(&name)]);
        name
    }

    /// An rclone remote string for a fake-gcs-server bucket (or `bucket/path`).
    pub fn gcs_remote(&self, bucket_path: &str) -> String {
        let endpoint = format!("{}/storage/v1/", self.gcs().endpoint.trim_end_matches('/'));
        format!(
            ":gcs,anonymous=true,endpoint={},project_number=test,bucket_policy_only=true:{bucket_path}",
            rclone_quote(&endpoint)
        )
    }

    /// Creates a new, empty fake-gcs-server bucket (through the JSON API) and returns its name.
    pub fn gcs_bucket(&self, prefix: &str) -> String {
        let name = unique_dns_name(prefix);
        run(Command::new("curl")
            .args(["-sSf", "-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-d", &format!("{{\"name\":{}}}", json_string(&name))])
            .arg(format!("{}/storage/v1/b?project=test", self.gcs().endpoint.trim_end_matches('/'))));
        name
    }

    /// Writes a KV v2 secret through OpenBao's HTTP API.
    pub fn put_secret(&self, path: &str, fields: &[(&str, &str)]) {
        let data: BTreeMap<&str, &str> = fields.iter().copied().collect();
        let body = format!("{{\"data\":{}}}", json_object(&data));
        self.vault_post(&format!("secret/data/{path}"), &body);
    }

    /// Reads a KV v2 secret: its fields, and the version they are.
    pub fn read_secret(&self, path: &str) -> (serde_json::Value, u64) {
        let output = run(Command::new("curl")
            .args(["-sf", "-H", &format!("X-Vault-Token: {}", self.vault_token)])
            .arg(format!("{}/v1/secret/data/{path}", self.vault_address)));
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let version = answer["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        (answer["data"]["data"].clone(), version)
    }

    /// A curl POST to OpenBao's API with the root token and any extra headers.
    fn vault_request(&self, api_path: &str, body: &str, headers: &[String]) -> Command {
        let mut command = Command::new("curl");
        command.args(["-sf", "-X", "POST", "-H", &format!("X-Vault-Token: {}", self.vault_token)]);
        for header in headers {
            command.args(["-H", header]);
        }
        command.args(["-d", body]).arg(format!("{}/v1/{api_path}", self.vault_address));
        command
    }

    /// POSTs to OpenBao's API with the root token and returns the response body.
    pub fn vault_post(&self, api_path: &str, body: &str) -> String {
        let output = run(&mut self.vault_request(api_path, body, &[]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// POSTs with the root token, asking OpenBao to wrap the response for `ttl` (such as `60s`).
    pub fn vault_post_wrapped(&self, api_path: &str, body: &str, ttl: &str) -> String {
        let output = run(&mut self.vault_request(api_path, body, &[format!("X-Vault-Wrap-TTL: {ttl}")]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// POSTs to OpenBao's API and ignores a refusal (such as mounting an engine twice).
    pub fn vault_post_allowing_failure(&self, api_path: &str, body: &str) -> bool {
        self.vault_request(api_path, body, &[]).status().is_ok_and(|status| status.success())
    }

    /// Whether OpenBao still knows the token with this accessor (`auth/token/lookup-accessor`
    /// with the root token). A revoked, unwrapped or expired token is unknown. Panics when
    /// OpenBao gives any other answer, so an unreachable server never passes for a revocation.
    pub fn vault_accessor_known(&self, accessor: &str) -> bool {
        let body = format!("{{\"accessor\":{}}}", json_string(accessor));
        let mut command = Command::new("curl");
        command
            .args(["-s", "-X", "POST", "-H", &format!("X-Vault-Token: {}", self.vault_token)])
            .args(["-d", &body, "-w", "\n%{http_code}"])
            .arg(format!("{}/v1/auth/token/lookup-accessor", self.vault_address));
        let output = run(&mut command);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (response, code) = text.rsplit_once('\n').unwrap_or((text.as_str(), ""));
        match code {
            "200" => true,
            "400" if response.contains("invalid accessor") => false,
            _ => panic!("looking up a token accessor: HTTP {code:?}: {response}"),
        }
    }

    /// Writes an ACL policy (HCL) named `name`.
    pub fn vault_policy(&self, name: &str, hcl: &str) {
        self.vault_post(&format!("sys/policies/acl/{name}"), &format!("{{\"policy\":{}}}", json_string(hcl)));
    }

    /// Creates a token with `auth/token/create` (`body` is its JSON) and returns the token.
    pub fn vault_token(&self, body: &str) -> String {
        let response = self.vault_post("auth/token/create", body);
        json_field(&response, "client_token").unwrap_or_else(|| panic!("no client_token in {response}"))
    }

    /// Mounts the Transit engine at `transit` (once) and creates a new key; returns its name.
    pub fn transit_key(&self, prefix: &str) -> String {
        let _ = self.vault_post_allowing_failure("sys/mounts/transit", r#"{"type":"transit"}"#);
        let key = unique(prefix).to_lowercase();
        self.vault_post(&format!("transit/keys/{key}"), "{}");
        key
    }

    /// Encrypts `plaintext` with a Transit key and returns the ciphertext (`vault:v1:...`).
    pub fn transit_encrypt(&self, key: &str, plaintext: &str) -> String {
        let body = format!("{{\"plaintext\":\"{}\"}}", base64(plaintext.as_bytes(), false));
        let response = self.vault_post(&format!("transit/encrypt/{key}"), &body);
        json_field(&response, "ciphertext").unwrap_or_else(|| panic!("no ciphertext in {response}"))
    }

    /// Bindings for a bucket with credentials at `secret/<vault_path>`.
    pub fn s3_binding(&self, name: &str, bucket: &str, vault_path: &str) -> String {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n  provider: s3\n  s3:\n    endpoint: {}\n    region: us-east-1\n    bucket: {bucket}\n    forcePathStyle: true\n  vault:\n    path: {vault_path}\n",
            self.s3_endpoint
        )
    }

    /// Stores this server's S3 keys in Vault at a fresh path and returns the path.
    pub fn s3_credentials_in_vault(&self) -> String {
        self.secret_in_vault("s3", &[("accessKeyId", &self.s3_access_key), ("secretAccessKey", &self.s3_secret_key)])
    }

    /// Stores `fields` in Vault at a fresh path under `tenants/test/` and returns the path.
    pub fn secret_in_vault(&self, prefix: &str, fields: &[(&str, &str)]) -> String {
        let path = format!("tenants/test/{}", unique(prefix));
        self.put_secret(&path, fields);
        path
    }

    /// Downloads a bucket path into a local directory (for independent hashing).
    pub fn download(&self, bucket_path: &str, into: &Path) {
        self.rclone(&["copy", &self.s3_remote(bucket_path), &into.to_string_lossy()]);
    }
}

/// `text` as a JSON string literal (quotes included).
pub fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first string value of `"name":"..."` in a JSON text (values without escapes only).
pub fn json_field(json: &str, name: &str) -> Option<String> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let length = json[start..].find('"')?;
    Some(json[start..start + length].to_owned())
}

/// Base64 of `bytes`: standard with padding, or URL-safe without (as in JWTs).
pub fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if !url_safe {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn json_object(map: &BTreeMap<&str, &str>) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let fields: Vec<String> = map.iter().map(|(k, v)| format!("\"{}\":\"{}\"", escape(k), escape(v))).collect();
    format!("{{{}}}", fields.join(","))
}

/// A filesystem binding rooted at an absolute directory.
pub fn fs_binding(name: &str, root: &Path) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n  provider: fs\n  fs:\n    root: {}\n",
        root.display()
    )
}

/// A job from `source` to `destination` with extra spec lines (indented two spaces).
pub fn job(source: (&str, &str), destination: (&str, &str), extra: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: test-job}}\nspec:\n  source: {{binding: {}, path: \"{}\"}}\n  destination: {{binding: {}, path: \"{}\"}}\n{extra}",
        source.0, source.1, destination.0, destination.1
    )
}

/// The SHA-256 of `content` in hex, as [`tree_hashes`] gives it for a file.
pub fn content_hash(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// SHA-256 of every file under `root`, by relative path: an independent check on Ferry's BLAKE3.
pub fn tree_hashes(root: &Path) -> BTreeMap<String, String> {
    let mut hashes = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with(".ferry-partial") {
                    pending.push(path);
                }
                continue;
            }
            let mut hasher = Sha256::new();
            let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            std::io::copy(&mut file, &mut hasher).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            hashes.insert(relative, hex::encode(hasher.finalize()));
        }
    }
    hashes
}

/// Names that break naive tools: spaces, NFC and NFD unicode, `%`, `+`, `#`, `?`, deep paths.
pub const TRICKY_NAMES: &[&str] = &[
    "plain.txt",
    "with space/file name.txt",
    "unicode/caf\u{e9}-nfc.txt",
    "unicode/cafe\u{301}-nfd.txt",
    "symbols/100% sure+plus#hash?query.txt",
    "deep/a/b/c/d/e/f/g/h/i/j/leaf.bin",
    "empty/zero-length.txt",
];

/// Writes the tricky-name data set (with one empty file) under `root`.
pub fn write_tricky_tree(root: &Path) {
    for (index, name) in TRICKY_NAMES.iter().enumerate() {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let content = if name.starts_with("empty/") {
            Vec::new()
        } else {
            format!("{name} #{index}\n").repeat(index * 50 + 1).into_bytes()
        };
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }
}

/// Writes `count` small files of `size` bytes spread over 100 directories.
pub fn write_small_files(root: &Path, count: usize, size: usize) {
    for index in 0..count {
        let directory = root.join(format!("d{:03}", index % 100));
        std::fs::create_dir_all(&directory).unwrap_or_else(|e| panic!("{directory:?}: {e}"));
        let mut content = format!("file {index}\n").into_bytes();
        content.resize(size, (index % 251) as u8);
        std::fs::write(directory.join(format!("f{index:06}.bin")), content).unwrap_or_else(|e| panic!("{index}: {e}"));
    }
}

/// Writes a self-signed certificate and key for 127.0.0.1 and localhost into `directory`
/// (made by `openssl`, valid as a server certificate) and returns their paths.
pub fn self_signed_certificate(directory: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (directory.join("tls.crt"), directory.join("tls.key"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // webpki refuses a CA certificate as a server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}
