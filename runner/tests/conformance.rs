//! One conformance suite for every backend, in the spirit of rclone's fstests: the same cases
//! run with each provider as the destination (from a local tree) and as the source (back to
//! a local tree), against real servers on loopback (SeaweedFS, Azurite, `rclone serve webdav`,
//! fake-gcs-server, OpenSSH's sshd, credentials in OpenBao): round trips of hostile names and sizes, a byte
//! changed behind Ferry's back, a server failing for a while, and a run killed mid-way.
//! rclone reading the remote side cross-checks the bytes independently. Adding a backend
//! means adding a [`Remote`] and one `conformance!` line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Case, paths_with};
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

/// How a backend is reached in a test: a fresh place on its server, a binding for it, and an
/// rclone remote for the same place.
struct Remote {
    /// The provider, as bindings name it.
    provider: &'static str,
    /// The server's endpoint as a binding names it (a proxy may stand in front of it).
    endpoint: fn(&Servers) -> String,
    /// Makes a fresh bucket, container or directory; returns `(binding spec lines, job path,
    /// rclone remote of that job path)` for `endpoint`.
    place: fn(&Servers, &str) -> (String, String, String),
    /// How a small object copied to it is verified.
    verified_by: &'static str,
    /// The size of the large (sparse) object in the round trip.
    large_object: u64,
    /// Whether objects keep a media type (object stores do; WebDAV servers guess their own).
    stores_content_type: bool,
}

fn s3_endpoint(servers: &Servers) -> String {
    servers.s3_endpoint.clone()
}

fn s3_place(servers: &Servers, endpoint: &str) -> (String, String, String) {
    let bucket = servers.bucket("conformance");
    let spec = format!(
        "  provider: s3\n  s3: {{endpoint: \"{endpoint}\", region: us-east-1, bucket: {bucket}, forcePathStyle: true}}\n  vault: {{path: {}}}\n",
        servers.s3_credentials_in_vault()
    );
    (spec, String::new(), servers.s3_remote(&bucket))
}

fn azure_endpoint(servers: &Servers) -> String {
    servers.azure().endpoint.clone()
}

fn azure_place(servers: &Servers, endpoint: &str) -> (String, String, String) {
    let azure = servers.azure();
    let container = servers.azure_container("conformance");
    let path = servers.secret_in_vault("azure", &[("accountKey", &azure.key)]);
    let spec = format!(
        "  provider: azblob\n  azblob: {{endpoint: \"{endpoint}\", account: {}, container: {container}}}\n  vault: {{path: {path}}}\n",
        azure.account
    );
    (spec, String::new(), servers.azure_remote(&container))
}

fn webdav_endpoint(servers: &Servers) -> String {
    servers.webdav().endpoint.clone()
}

fn webdav_place(servers: &Servers, endpoint: &str) -> (String, String, String) {
    let webdav = servers.webdav();
    let directory = servers.webdav_directory("conformance");
    let path = servers.secret_in_vault("webdav", &[("username", &webdav.user), ("password", &webdav.password)]);
    let spec = format!("  provider: webdav\n  webdav: {{endpoint: \"{endpoint}\"}}\n  vault: {{path: {path}}}\n");
    (spec, format!("{directory}/"), servers.webdav_remote(&directory))
}

fn gcs_endpoint(servers: &Servers) -> String {
    servers.gcs().endpoint.clone()
}

fn gcs_place(servers: &Servers, endpoint: &str) -> (String, String, String) {
    let bucket = servers.gcs_bucket("conformance");
    // fake-gcs-server takes any token; a real bucket would want one from Vault's GCP engine.
    let path = servers.secret_in_vault("gcs", &[("accessToken", "conformance-token")]);
    let spec =
        format!("  provider: gcs\n  gcs: {{endpoint: \"{endpoint}\", bucket: {bucket}}}\n  vault: {{path: {path}}}\n");
    (spec, String::new(), servers.gcs_remote(&bucket))
}

fn sftp_endpoint(servers: &Servers) -> String {
    let sftp = servers.sftp();
    format!("{}:{}", sftp.host, sftp.port)
}

/// Logs in with the account's key; the host key is trusted for the address actually dialled
/// (a proxy's port, when one stands in front).
fn sftp_place(servers: &Servers, endpoint: &str) -> (String, String, String) {
    let sftp = servers.sftp();
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let directory = servers.sftp_directory("conformance");
    let key = std::fs::read_to_string(&sftp.key_file).unwrap();
    let path = servers.secret_in_vault("sftp", &[("privateKey", &key)]);
    let known_hosts = sftp.known_hosts_line(host, port.parse().unwrap());
    let spec = format!(
        "  provider: sftp\n  sftp: {{host: \"{host}\", port: {port}, user: {}, root: \"{}\", knownHosts: \"{known_hosts}\"}}\n  vault: {{path: {path}}}\n",
        sftp.user, sftp.root
    );
    (spec, format!("{directory}/"), servers.sftp_remote(&directory))
}

/// Larger than the runner's 8 MiB part: a multipart upload, or blocks.
const LARGE: u64 = 20 << 20;

const S3: Remote = Remote {
    provider: "s3",
    endpoint: s3_endpoint,
    place: s3_place,
    verified_by: "md5Etag",
    large_object: LARGE,
    stores_content_type: true,
};
const AZBLOB: Remote = Remote {
    provider: "azblob",
    endpoint: azure_endpoint,
    place: azure_place,
    verified_by: "contentMd5",
    large_object: LARGE,
    stores_content_type: true,
};
const WEBDAV: Remote = Remote {
    provider: "webdav",
    endpoint: webdav_endpoint,
    place: webdav_place,
    verified_by: "blake3Readback",
    large_object: LARGE,
    stores_content_type: false,
};
/// fake-gcs-server lacks the XML multipart API that OpenDAL (and real GCS) use for objects
/// over one part, so the stand-in is given a large object of exactly one part.
const GCS: Remote = Remote {
    provider: "gcs",
    endpoint: gcs_endpoint,
    place: gcs_place,
    verified_by: "contentMd5",
    large_object: 8 << 20,
    stores_content_type: true,
};

const SFTP: Remote = Remote {
    provider: "sftp",
    endpoint: sftp_endpoint,
    place: sftp_place,
    verified_by: "blake3Readback",
    large_object: LARGE,
    stores_content_type: false,
};

/// A remote place for one test, with its binding named `remote`.
struct Place {
    binding: String,
    path: String,
    rclone: String,
}

fn place(remote: &Remote, servers: &Servers, endpoint: Option<&str>) -> Place {
    let endpoint = endpoint.map_or_else(|| (remote.endpoint)(servers), str::to_owned);
    let (spec, path, rclone) = (remote.place)(servers, &endpoint);
    let binding =
        format!("apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: remote}}\nspec:\n{spec}");
    Place { binding, path, rclone }
}

/// `rclone check --download`: every byte read back from both sides and compared.
fn rclone_check(servers: &Servers, local: &Path, remote: &str) {
    let output = servers.rclone(&["check", "--download", &local.to_string_lossy(), remote]);
    assert!(output.status.success(), "rclone check: {}", String::from_utf8_lossy(&output.stderr));
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
    let remote_place = place(remote, &servers, None);

    let to_remote = vec![
        job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
        fs_binding("local", &source),
        remote_place.binding.clone(),
    ];
    let objects = tree_hashes(&source).len();
    let report = case.run_ok("to-remote", to_remote.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    let small = report.iter().find(|r| r["path"] == "plain.txt").unwrap();
    assert_eq!(small["verifiedBy"], remote.verified_by, "{}: {small}", remote.provider);
    rclone_check(&servers, &source, &remote_place.rclone);
    if remote.stores_content_type {
        // The object's own media type (services default to an octet stream when none is sent).
        let stat = servers.rclone(&["lsjson", "--stat", &format!("{}/plain.txt", remote_place.rclone)]);
        let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
        assert_eq!(stat["MimeType"], "text/plain", "{}: {stat}", remote.provider);
    }

    let back = case.path("back");
    let from_remote = vec![
        job(("remote", &remote_place.path), ("local", ""), "  verify: checksum\n"),
        remote_place.binding.clone(),
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
    let remote_place = place(remote, &servers, None);
    let documents = vec![
        job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
        fs_binding("local", &source),
        remote_place.binding.clone(),
    ];
    case.run_ok("first", documents.clone(), &[]);

    let victim = tree_hashes(&source).keys().next().unwrap().clone();
    let mut bytes = std::fs::read(source.join(&victim)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let tampered = case.path("tampered");
    std::fs::write(&tampered, &bytes).unwrap();
    let output = servers.rclone(&[
        "copyto",
        "--ignore-times",
        &tampered.to_string_lossy(),
        &format!("{}/{victim}", remote_place.rclone),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let report = case.run_ok("repair", documents, &[]);
    assert_eq!(paths_with(&report, "copied"), vec![victim], "{}: {report:?}", remote.provider);
    assert_eq!(paths_with(&report, "skipped").len(), 4);
    rclone_check(&servers, &source, &remote_place.rclone);
}

/// The server refuses every connection for a while (a proxy in front of it cuts them): the
/// transfers are retried and every object arrives once.
fn a_server_failing_for_a_while(remote: &Remote) {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 8, 500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = (remote.endpoint)(&servers);
    let authority = upstream.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let proxy = runtime.block_on(ferry_e2e::proxy::FlakyProxy::start(authority.clone())).unwrap();
    let proxied = upstream.replacen(&authority, &proxy.address.to_string(), 1);
    let remote_place = place(remote, &servers, Some(&proxied));
    let manifests = case.manifests(
        "flaky.yaml",
        &[
            job(("local", ""), ("remote", &remote_place.path), "  verify: checksum\n"),
            fs_binding("local", &source),
            remote_place.binding.clone(),
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
    rclone_check(&servers, &source, &remote_place.rclone);
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
    let remote_place = place(remote, &servers, None);
    let documents = |extra: &str| {
        vec![
            job(("local", ""), ("remote", &remote_place.path), &format!("  verify: checksum\n{extra}")),
            fs_binding("local", &source),
            remote_place.binding.clone(),
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
        let listed = servers.rclone(&["lsf", "-R", "--files-only", &remote_place.rclone]);
        if String::from_utf8_lossy(&listed.stdout).lines().count() >= 3 {
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
    rclone_check(&servers, &source, &remote_place.rclone);
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
