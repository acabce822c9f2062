//! One conformance suite for every backend, in the spirit of rclone's fstests: the same cases
//! run with each provider as the destination (from a local tree) and as the source (back to
//! a local tree), against real servers on loopback (SeaweedFS, Azurite, `rclone serve webdav`,
//! fake-gcs-server, OpenSSH's sshd, credentials in OpenBao) and against stand-ins of the
//! drives' APIs (Microsoft Graph, Dropbox, Google Drive, with a real OAuth token endpoint):
//! round trips of hostile names and sizes, a byte changed behind Ferry's back, a server
//! failing for a while, and a run killed mid-way. rclone reading the remote side (or, for a
//! stand-in, its own record of what it holds) cross-checks the bytes independently. Adding a
//! backend means adding a [`Remote`] and one `conformance!` line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Case, paths_with};
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

/// How a backend is reached in a test.
struct Remote {
    /// The provider, as bindings name it.
    provider: &'static str,
    /// Makes a fresh bucket, container, directory or stand-in for one test. The binding
    /// reaches the server at `endpoint(its real endpoint)`: the same, or a proxy in front.
    place: fn(&Servers, &mut dyn FnMut(String) -> String) -> Place,
    /// How a small object copied to it is verified.
    verified_by: &'static str,
    /// The size of the large (sparse) object in the round trip.
    large_object: u64,
    /// Whether objects keep a media type (object stores do; WebDAV servers guess their own).
    stores_content_type: bool,
    /// A key of the round trip's data the provider cannot hold (its name rules are tested
    /// with the provider's own tests): left out of the round trip.
    cannot_hold: Option<&'static str>,
}

/// A remote place for one test: its binding's spec, the job path, and how to look at it.
struct Place {
    spec: String,
    path: String,
    view: View,
}

/// How a test looks at a remote place independently of Ferry.
enum View {
    /// An rclone remote for the job path.
    Rclone(String),
    /// A drive stand-in (rclone cannot reach one) and the job path's folder in it.
    StandIn(Box<dyn ferry_e2e::StandIn>, String),
}

impl Place {
    /// The binding, named `remote`.
    fn binding(&self) -> String {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: remote}}\nspec:\n{}",
            self.spec
        )
    }

    /// The remote place holds exactly the tree at `local`: `rclone check --download` reads
    /// every byte of both sides; a stand-in's files are hashed.
    fn assert_holds(&self, servers: &Servers, local: &Path) {
        match &self.view {
            View::Rclone(remote) => {
                let output = servers.rclone(&["check", "--download", &local.to_string_lossy(), remote]);
                assert!(output.status.success(), "rclone check: {}", String::from_utf8_lossy(&output.stderr));
            }
            View::StandIn(..) => assert_eq!(self.stand_in_hashes(), tree_hashes(local)),
        }
    }

    fn stand_in_hashes(&self) -> std::collections::BTreeMap<String, String> {
        let View::StandIn(stand_in, folder) = &self.view else { return Default::default() };
        stand_in
            .files()
            .into_iter()
            .filter_map(|(path, content)| {
                Some((path.strip_prefix(folder)?.to_owned(), ferry_e2e::content_hash(&content)))
            })
            .collect()
    }

    /// Replaces `key` with `content` behind Ferry's back.
    fn tamper(&self, servers: &Servers, case: &Case, key: &str, content: &[u8]) {
        match &self.view {
            View::Rclone(remote) => {
                let tampered = case.path("tampered");
                std::fs::write(&tampered, content).unwrap();
                let target = format!("{remote}/{key}");
                let output = servers.rclone(&["copyto", "--ignore-times", &tampered.to_string_lossy(), &target]);
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            }
            View::StandIn(stand_in, folder) => stand_in.put(&format!("{folder}{key}"), content),
        }
    }

    /// How many files are there.
    fn file_count(&self, servers: &Servers) -> usize {
        match &self.view {
            View::Rclone(remote) => {
                let listed = servers.rclone(&["lsf", "-R", "--files-only", remote]);
                String::from_utf8_lossy(&listed.stdout).lines().count()
            }
            View::StandIn(..) => self.stand_in_hashes().len(),
        }
    }
}

fn s3_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    let endpoint = endpoint(servers.s3_endpoint.clone());
    let bucket = servers.bucket("conformance");
    let spec = format!(
        "  provider: s3\n  s3: {{endpoint: \"{endpoint}\", region: us-east-1, bucket: {bucket}, forcePathStyle: true}}\n  vault: {{path: {}}}\n",
        servers.s3_credentials_in_vault()
    );
    Place { spec, path: String::new(), view: View::Rclone(servers.s3_remote(&bucket)) }
}

fn azure_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    let azure = servers.azure();
    let endpoint = endpoint(azure.endpoint.clone());
    let container = servers.azure_container("conformance");
    let path = servers.secret_in_vault("azure", &[("accountKey", &azure.key)]);
    let spec = format!(
        "  provider: azblob\n  azblob: {{endpoint: \"{endpoint}\", account: {}, container: {container}}}\n  vault: {{path: {path}}}\n",
        azure.account
    );
    Place { spec, path: String::new(), view: View::Rclone(servers.azure_remote(&container)) }
}

fn webdav_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    let webdav = servers.webdav();
    let endpoint = endpoint(webdav.endpoint.clone());
    let directory = servers.webdav_directory("conformance");
    let path = servers.secret_in_vault("webdav", &[("username", &webdav.user), ("password", &webdav.password)]);
    let spec = format!("  provider: webdav\n  webdav: {{endpoint: \"{endpoint}\"}}\n  vault: {{path: {path}}}\n");
    Place { spec, path: format!("{directory}/"), view: View::Rclone(servers.webdav_remote(&directory)) }
}

fn gcs_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    let endpoint = endpoint(servers.gcs().endpoint.clone());
    let bucket = servers.gcs_bucket("conformance");
    // fake-gcs-server takes any token; a real bucket would want one from Vault's GCP engine.
    let path = servers.secret_in_vault("gcs", &[("accessToken", "conformance-token")]);
    let spec =
        format!("  provider: gcs\n  gcs: {{endpoint: \"{endpoint}\", bucket: {bucket}}}\n  vault: {{path: {path}}}\n");
    Place { spec, path: String::new(), view: View::Rclone(servers.gcs_remote(&bucket)) }
}

/// Logs in with the account's key; the host key is trusted for the address actually dialled
/// (a proxy's port, when one stands in front).
fn sftp_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    let sftp = servers.sftp();
    let endpoint = endpoint(format!("{}:{}", sftp.host, sftp.port));
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let directory = servers.sftp_directory("conformance");
    let key = std::fs::read_to_string(&sftp.key_file).unwrap();
    let path = servers.secret_in_vault("sftp", &[("privateKey", &key)]);
    let known_hosts = sftp.known_hosts_line(host, port.parse().unwrap());
    let spec = format!(
        "  provider: sftp\n  sftp: {{host: \"{host}\", port: {port}, user: {}, root: \"{}\", knownHosts: \"{known_hosts}\"}}\n  vault: {{path: {path}}}\n",
        sftp.user, sftp.root
    );
    Place { spec, path: format!("{directory}/"), view: View::Rclone(servers.sftp_remote(&directory)) }
}

/// A drive's stand-in of its own, under the folder `Migrations`, with an OAuth client and
/// refresh token in Vault and the test servers' token endpoint.
fn drive_place(
    servers: &Servers,
    endpoint: &mut dyn FnMut(String) -> String,
    provider: &str,
    stand_in: Box<dyn ferry_e2e::StandIn>,
) -> Place {
    let api = endpoint(stand_in.api_endpoint());
    let token_endpoint = std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT")
        .expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT is not set: run eval \"$(scripts/test-servers.sh start)\" first");
    let fields = [("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", "conformance")];
    let path = servers.secret_in_vault(provider, &fields);
    let spec = format!(
        "  provider: {provider}\n  {provider}: {{apiEndpoint: \"{api}\", tokenEndpoint: \"{token_endpoint}\", root: Migrations}}\n  vault: {{path: {path}}}\n"
    );
    Place { spec, path: "conformance/".to_owned(), view: View::StandIn(stand_in, "Migrations/conformance/".to_owned()) }
}

fn onedrive_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    drive_place(servers, endpoint, "onedrive", Box::new(ferry_e2e::graph::GraphStandIn::start()))
}

fn dropbox_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    drive_place(servers, endpoint, "dropbox", Box::new(ferry_e2e::dropbox::DropboxStandIn::start()))
}

fn gdrive_place(servers: &Servers, endpoint: &mut dyn FnMut(String) -> String) -> Place {
    drive_place(servers, endpoint, "gdrive", Box::new(ferry_e2e::gdrive::DriveStandIn::start()))
}

/// Larger than the runner's 8 MiB part: a multipart upload, or blocks.
const LARGE: u64 = 20 << 20;

const S3: Remote = Remote {
    provider: "s3",
    place: s3_place,
    verified_by: "md5Etag",
    large_object: LARGE,
    stores_content_type: true,
    cannot_hold: None,
};
const AZBLOB: Remote = Remote {
    provider: "azblob",
    place: azure_place,
    verified_by: "contentMd5",
    large_object: LARGE,
    stores_content_type: true,
    cannot_hold: None,
};
const WEBDAV: Remote = Remote {
    provider: "webdav",
    place: webdav_place,
    verified_by: "blake3Readback",
    large_object: LARGE,
    stores_content_type: false,
    cannot_hold: None,
};
/// fake-gcs-server lacks the XML multipart API that OpenDAL (and real GCS) use for objects
/// over one part, so the stand-in is given a large object of exactly one part.
const GCS: Remote = Remote {
    provider: "gcs",
    place: gcs_place,
    verified_by: "contentMd5",
    large_object: 8 << 20,
    stores_content_type: true,
    cannot_hold: None,
};
const SFTP: Remote = Remote {
    provider: "sftp",
    place: sftp_place,
    verified_by: "blake3Readback",
    large_object: LARGE,
    stores_content_type: false,
    cannot_hold: None,
};
/// OneDrive refuses `?` in names (`runner/tests/onedrive.rs` tests that refusal).
const ONEDRIVE: Remote = Remote {
    provider: "onedrive",
    place: onedrive_place,
    verified_by: "driveHash",
    large_object: LARGE,
    stores_content_type: false,
    cannot_hold: Some("symbols/100% sure+plus#hash?query.txt"),
};
const DROPBOX: Remote = Remote {
    provider: "dropbox",
    place: dropbox_place,
    verified_by: "driveHash",
    large_object: LARGE,
    stores_content_type: false,
    cannot_hold: None,
};
const GDRIVE: Remote = Remote {
    provider: "gdrive",
    place: gdrive_place,
    verified_by: "contentMd5",
    large_object: LARGE,
    stores_content_type: false,
    cannot_hold: None,
};

/// A place on `remote` reached directly.
fn place(remote: &Remote, servers: &Servers) -> Place {
    (remote.place)(servers, &mut |endpoint| endpoint)
}

/// Tricky names, empty files, a 200-character name, a deep path, many small files and a
/// large sparse file (uploaded in parts): to the remote, back, and again with nothing to do.
fn round_trip(remote: &Remote) {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_tricky_tree(&source);
    write_small_files(&source.join("many"), 60, 700);
    let long = format!("long/{}.txt", "n".repeat(200));
    std::fs::create_dir_all(source.join("long")).unwrap();
    std::fs::write(source.join(&long), b"a long name").unwrap();
    let sparse = std::fs::File::create(source.join("sparse.bin")).unwrap();
    sparse.set_len(remote.large_object).unwrap();
    if let Some(key) = remote.cannot_hold {
        std::fs::remove_file(source.join(key)).unwrap();
    }
    let remote_place = place(remote, &servers);

    let to_remote = vec![
        job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
        fs_binding("local", &source),
        remote_place.binding(),
    ];
    let objects = tree_hashes(&source).len();
    let report = case.run_ok("to-remote", to_remote.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    let small = report.iter().find(|r| r["path"] == "plain.txt").unwrap();
    assert_eq!(small["verifiedBy"], remote.verified_by, "{}: {small}", remote.provider);
    remote_place.assert_holds(&servers, &source);
    if let (true, View::Rclone(rclone)) = (remote.stores_content_type, &remote_place.view) {
        // The object's own media type (services default to an octet stream when none is sent).
        let stat = servers.rclone(&["lsjson", "--stat", &format!("{rclone}/plain.txt")]);
        let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
        assert_eq!(stat["MimeType"], "text/plain", "{}: {stat}", remote.provider);
    }

    let back = case.path("back");
    let from_remote = vec![
        job(("remote", &remote_place.path), ("local", ""), "  verify: checksum\n"),
        remote_place.binding(),
        fs_binding("local", &back),
    ];
    let report = case.run_ok("from-remote", from_remote.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    assert_eq!(tree_hashes(&source), tree_hashes(&back));

    // Both again: every object is proven identical, nothing moves.
    let report = case.run_ok("to-remote-again", to_remote, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{}: {report:?}", remote.provider);
    let report = case.run_ok("from-remote-again", from_remote, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{}: {report:?}", remote.provider);
    case.assert_spool_empty();
}

/// A remote object changed behind Ferry's back (same size, one byte different) is found and
/// copied again; the others are left alone.
fn a_changed_byte_is_caught_and_repaired(remote: &Remote) {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 5, 300);
    let remote_place = place(remote, &servers);
    let documents = vec![
        job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
        fs_binding("local", &source),
        remote_place.binding(),
    ];
    case.run_ok("first", documents.clone(), &[]);

    let victim = tree_hashes(&source).keys().next().unwrap().clone();
    let mut bytes = std::fs::read(source.join(&victim)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    remote_place.tamper(&servers, &case, &victim, &bytes);

    let report = case.run_ok("repair", documents, &[]);
    assert_eq!(paths_with(&report, "copied"), vec![victim], "{}: {report:?}", remote.provider);
    assert_eq!(paths_with(&report, "skipped").len(), 4);
    remote_place.assert_holds(&servers, &source);
}

/// The server refuses every connection for a while (a proxy in front of it cuts them): the
/// transfers are retried and every object arrives once.
fn a_server_failing_for_a_while(remote: &Remote) {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 8, 500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut proxy = None;
    let remote_place = (remote.place)(&servers, &mut |upstream: String| {
        let authority = upstream.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        let started = runtime.block_on(ferry_e2e::proxy::FlakyProxy::start(authority.clone())).unwrap();
        let proxied = upstream.replacen(&authority, &started.address.to_string(), 1);
        proxy = Some(started);
        proxied
    });
    let proxy = proxy.expect("the place names its endpoint");
    let manifests = case.manifests(
        "flaky.yaml",
        &[
            job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
            fs_binding("local", &source),
            remote_place.binding(),
        ],
    );
    proxy.set_failing(true);
    let mut run = case
        .command(&["run", "-f", manifests.to_str().unwrap(), "--report", case.path("flaky.jsonl").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let cut = proxy.cut_connections();
    proxy.set_failing(false);
    let status = run.wait().unwrap();
    assert!(status.success(), "{}: the run failed after the server recovered", remote.provider);
    assert!(cut > 0, "the proxy cut no connection, so nothing was tested");
    let report = case.report("flaky.jsonl");
    assert_eq!(paths_with(&report, "copied").len(), 8, "{report:?}");
    remote_place.assert_holds(&servers, &source);
    drop(runtime);
}

/// A run killed (SIGKILL, no clean-up) mid-way and run again: what the first run verified is
/// skipped, anything it left half-written is found and copied again, and the remote ends
/// up identical to the source.
fn resume_after_a_kill(remote: &Remote) {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    // The first 8 MiB pass the bandwidth limit's burst at once; the rest crawl at 1 MiB/s.
    write_small_files(&source, 14, 1 << 20);
    let remote_place = place(remote, &servers);
    let documents = |extra: &str| {
        vec![
            job(("local", ""), ("remote", &remote_place.path), &format!("  verify: checksum\n{extra}")),
            fs_binding("local", &source),
            remote_place.binding(),
        ]
    };
    let slow = case.manifests("slow.yaml", &documents("  bandwidthLimit: 1Mi\n  transfers: 2\n"));
    let mut run = case
        .command(&["run", "-f", slow.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a few objects are there (one more second lets their verification finish),
    // however slowly a loaded machine got there.
    let started = std::time::Instant::now();
    loop {
        if remote_place.file_count(&servers) >= 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}: nothing arrived within 60 s", remote.provider);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    run.kill().unwrap();
    run.wait().unwrap();

    let report = case.run_ok("resume", documents(""), &[]);
    let (copied, skipped) = (paths_with(&report, "copied").len(), paths_with(&report, "skipped").len());
    assert_eq!(copied + skipped, 14, "{}: {report:?}", remote.provider);
    assert!(skipped >= 1, "{}: nothing the killed run verified was skipped: {report:?}", remote.provider);
    assert!(copied >= 1, "{}: the killed run had finished before it was killed", remote.provider);
    remote_place.assert_holds(&servers, &source);
}

/// Every case for one backend, each its own test so a failure names backend and case.
macro_rules! conformance {
    ($module:ident, $remote:expr) => {
        mod $module {
            #[test]
            fn round_trip() {
                super::round_trip(&$remote);
            }

            #[test]
            fn a_changed_byte_is_caught_and_repaired() {
                super::a_changed_byte_is_caught_and_repaired(&$remote);
            }

            #[test]
            fn a_server_failing_for_a_while() {
                super::a_server_failing_for_a_while(&$remote);
            }

            #[test]
            fn resume_after_a_kill() {
                super::resume_after_a_kill(&$remote);
            }
        }
    };
}

conformance!(s3, super::S3);
conformance!(azblob, super::AZBLOB);
conformance!(webdav, super::WEBDAV);
conformance!(gcs, super::GCS);
conformance!(sftp, super::SFTP);
conformance!(onedrive, super::ONEDRIVE);
conformance!(dropbox, super::DROPBOX);
conformance!(gdrive, super::GDRIVE);
