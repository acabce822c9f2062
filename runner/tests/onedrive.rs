//! OneDrive through Microsoft Graph, against a stand-in of Graph built from its documented
//! requests (`ferry_e2e::graph`) and a real OAuth 2.0 token endpoint (`oauth2-mock-server`,
//! started by `scripts/test-servers.sh`, which rotates refresh tokens and refuses revoked
//! ones): round trips with paging and upload sessions, a changed byte caught, a 401 answered
//! with a fresh token, throttling waited out, and a revoked refresh token stopping the run
//! with what to do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Case, paths_with};
use ferry_e2e::graph::GraphStandIn;
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

fn token_endpoint() -> String {
    std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT")
        .expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT is not set: run eval \"$(scripts/test-servers.sh start)\" first")
}

/// A binding for the stand-in's drive, under the folder `Migrations`, with this refresh token.
fn binding(servers: &Servers, graph: &GraphStandIn, refresh_token: &str) -> String {
    binding_and_secret(servers, graph, refresh_token).0
}

/// The binding and the Vault path of its secret.
fn binding_and_secret(servers: &Servers, graph: &GraphStandIn, refresh_token: &str) -> (String, String) {
    let path = servers.secret_in_vault(
        "onedrive",
        &[("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", refresh_token)],
    );
    let binding = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: drive}}\nspec:\n  provider: onedrive\n  \
         onedrive: {{apiEndpoint: \"{}\", tokenEndpoint: \"{}\", root: Migrations}}\n  vault: {{path: {path}}}\n",
        graph.api_endpoint(),
        token_endpoint()
    );
    (binding, path)
}

/// The drive's files under `Migrations/<folder>/`, keyed by their path below it, hashed as
/// `tree_hashes` hashes a local tree.
fn drive_hashes(graph: &GraphStandIn, folder: &str) -> BTreeMap<String, String> {
    let prefix = format!("Migrations/{folder}/");
    graph
        .files()
        .into_iter()
        .filter_map(|(path, content)| {
            let key = path.strip_prefix(&prefix)?.to_owned();
            Some((key, ferry_e2e::content_hash(&content)))
        })
        .collect()
}

/// Runs `documents` as `name`, expecting exactly the one key OneDrive cannot hold (the
/// tricky tree's `?`) to fail; returns the report.
fn run_all_but_the_question_mark(case: &Case, name: &str, documents: Vec<String>) -> Vec<serde_json::Value> {
    let manifests = case.manifests(&format!("{name}.yaml"), &documents);
    let output = case.run(&manifests, &format!("{name}.jsonl"), &[]);
    let report = case.report(&format!("{name}.jsonl"));
    let failed: Vec<&serde_json::Value> = report.iter().filter(|r| r["action"] == "failed").collect();
    match failed.as_slice() {
        [] => common::assert_exit(&output, 0),
        [one] => {
            assert_eq!(one["path"], QUESTION_MARK, "{report:?}");
            assert!(one["error"].as_str().unwrap().contains("contains '?'"), "{one}");
            common::assert_exit(&output, 1);
        }
        _ => panic!("{report:?}"),
    }
    report
}

/// The tricky tree's name with `?`, which OneDrive refuses.
const QUESTION_MARK: &str = "symbols/100% sure+plus#hash?query.txt";

#[test]
fn a_round_trip_through_pages_and_upload_sessions() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_tricky_tree(&source);
    write_small_files(&source.join("many"), 60, 500);
    let large: Vec<u8> = (0..(12u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(source.join("large.bin"), &large).unwrap();
    let (drive, secret) = binding_and_secret(&servers, &graph, "refresh-1");
    let to_drive =
        vec![job(("local", ""), ("drive", "in/"), "  verify: checksum\n"), fs_binding("local", &source), drive.clone()];
    let mut expected = tree_hashes(&source);
    expected.remove(QUESTION_MARK);
    let objects = expected.len();
    let report = run_all_but_the_question_mark(&case, "to-drive", to_drive.clone());
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    // Each copy is proven by the QuickXorHash the drive computed against Ferry's of the source.
    let copied = report.iter().filter(|r| r["action"] == "copied");
    assert!(copied.clone().all(|r| r["verifiedBy"] == "driveHash"), "{report:?}");
    assert_eq!(drive_hashes(&graph, "in"), expected);

    let back = case.path("back");
    let from_drive =
        vec![job(("drive", "in/"), ("local", ""), "  verify: checksum\n"), drive, fs_binding("local", &back)];
    let report = case.run_ok("from-drive", from_drive.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    assert_eq!(tree_hashes(&back), expected);

    let report = run_all_but_the_question_mark(&case, "to-drive-again", to_drive);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{report:?}");
    let report = case.run_ok("from-drive-again", from_drive, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{report:?}");

    // The token endpoint rotated the refresh token on every refresh; each run wrote the new
    // one back (check-and-set), keeping the other fields, and the next run started from it.
    let (fields, version) = servers.read_secret(&secret);
    assert_ne!(fields["refreshToken"], "refresh-1", "{fields}");
    assert_eq!(fields["clientId"], "ferry-test");
    assert_eq!(fields["clientSecret"], "ferry-test-secret");
    assert!(version >= 5, "one rotation per run: version {version}");
}

#[test]
fn ferrys_quickxorhash_agrees_with_rclones() {
    use ferry_runner::object::{DigestSet, DriveHash, Hasher};
    let servers = servers();
    let case = Case::new();
    for size in [0usize, 1, 159, 160, 161, 1000, (1 << 20) + 7] {
        let content: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let file = case.path(&format!("{size}.bin"));
        std::fs::write(&file, &content).unwrap();
        let mut hasher = Hasher::new(DigestSet::drive(DriveHash::QuickXor));
        hasher.update(&content);
        let ours = hasher.finish().drive_hash.unwrap();
        let output = servers.rclone(&["hashsum", "quickxor", &file.to_string_lossy()]);
        let theirs = String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned();
        assert_eq!(ours, theirs, "{size} bytes");
    }
}

#[test]
fn an_interrupted_upload_cancels_its_session() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("large.bin"), vec![3u8; 64 << 20]).unwrap();
    let manifests = case.manifests(
        "slow.yaml",
        &[
            // The session opens with the second 8 MiB part (about 4 s in); the other six parts
            // take 24 s more, so the kill comes long before the upload could end, even on a
            // loaded machine (the kill waits out at most the part in flight).
            job(("local", ""), ("drive", "in/"), "  bandwidthLimit: 2Mi\n"),
            fs_binding("local", &source),
            binding(&servers, &graph, "refresh-7"),
        ],
    );
    let mut run = case
        .command(&["run", "-f", manifests.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while graph.open_sessions() == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no upload session started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(3), "an interrupted run says so");
    assert_eq!(graph.open_sessions(), 0, "the unfinished session was cancelled");
    assert!(graph.files().is_empty(), "nothing half-written is at the path");
}

#[test]
fn a_changed_byte_on_the_drive_is_caught_and_repaired() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 4, 300);
    let documents = vec![
        job(("local", ""), ("drive", "in/"), "  verify: checksum\n"),
        fs_binding("local", &source),
        binding(&servers, &graph, "refresh-2"),
    ];
    case.run_ok("first", documents.clone(), &[]);
    let victim = tree_hashes(&source).keys().next().unwrap().clone();
    let mut content = std::fs::read(source.join(&victim)).unwrap();
    content[100] ^= 0x01;
    graph.put(&format!("Migrations/in/{victim}"), &content);
    let report = case.run_ok("repair", documents, &[]);
    assert_eq!(paths_with(&report, "copied"), [victim], "{report:?}");
    assert_eq!(drive_hashes(&graph, "in"), tree_hashes(&source));
}

/// Sets a file's modification time to `seconds` after the epoch.
fn set_modified(path: &std::path::Path, seconds: u64) {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
}

#[test]
fn modification_times_travel_so_newer_sees_a_later_edit() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 500);
    std::fs::write(source.join("session.bin"), vec![7u8; 5 << 20]).unwrap(); // over 4 MiB: an upload session
    let files: Vec<String> = tree_hashes(&source).into_keys().collect();
    for file in &files {
        set_modified(&source.join(file), 1_577_836_800); // 2020-01-01
    }
    let documents = vec![
        job(("local", ""), ("drive", "in/"), "  conflict: newer\n"),
        fs_binding("local", &source),
        binding(&servers, &graph, "refresh-6"),
    ];
    case.run_ok("first", documents.clone(), &[]);
    // Edits dated 2021, long before the upload: only copies that kept 2020 see them as newer.
    for file in ["session.bin", files[0].as_str()] {
        set_modified(&source.join(file), 1_609_459_200);
    }
    let report = case.run_ok("edited", documents.clone(), &[]);
    let mut expected = vec![files[0].clone(), "session.bin".to_owned()];
    expected.sort();
    assert_eq!(paths_with(&report, "copied"), expected, "{report:?}");
    let report = case.run_ok("unchanged", documents, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), 4, "{report:?}");
}

/// A binding whose secret is Transit-encrypted: the rotated refresh token is written back
/// encrypted under the same key, and decrypts to the token the next run started from.
#[test]
fn a_rotated_refresh_token_is_written_back_encrypted_with_transit() {
    use base64::Engine;
    let servers = servers();
    let graph = GraphStandIn::start();
    let key = ferry_e2e::unique("drive").to_lowercase();
    let _ = servers.vault_post_allowing_failure("sys/mounts/transit", r#"{"type":"transit"}"#);
    servers.vault_post(&format!("transit/keys/{key}"), "{}");
    let encrypt = |plaintext: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(plaintext);
        let response =
            servers.vault_post(&format!("transit/encrypt/{key}"), &format!("{{\"plaintext\":\"{encoded}\"}}"));
        serde_json::from_str::<serde_json::Value>(&response).unwrap()["data"]["ciphertext"].as_str().unwrap().to_owned()
    };
    let path = format!("tenants/test/{}", ferry_e2e::unique("drive-transit"));
    servers.put_secret(
        &path,
        &[
            ("clientId", &encrypt("ferry-test")),
            ("clientSecret", &encrypt("ferry-test-secret")),
            ("refreshToken", &encrypt("refresh-transit")),
        ],
    );
    let binding = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: drive}}\nspec:\n  provider: onedrive\n  \
         onedrive: {{apiEndpoint: \"{}\", tokenEndpoint: \"{}\"}}\n  vault: {{path: {path}, transitKey: {key}}}\n",
        graph.api_endpoint(),
        token_endpoint()
    );
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 2, 100);
    let documents = vec![job(("local", ""), ("drive", "in/"), ""), fs_binding("local", &source), binding];
    case.run_ok("first", documents.clone(), &[]);

    let (fields, _) = servers.read_secret(&path);
    let stored = fields["refreshToken"].as_str().unwrap().to_owned();
    assert!(stored.starts_with("vault:v1:"), "the rotated token is stored encrypted: {stored}");
    let response = servers.vault_post(&format!("transit/decrypt/{key}"), &format!("{{\"ciphertext\":\"{stored}\"}}"));
    let plaintext =
        serde_json::from_str::<serde_json::Value>(&response).unwrap()["data"]["plaintext"].as_str().unwrap().to_owned();
    let token = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(plaintext).unwrap()).unwrap();
    assert_ne!(token, "refresh-transit", "the token endpoint rotated it");
    // The next run reads and decrypts the rotated token, and works.
    let report = case.run_ok("second", documents, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), 2, "{report:?}");
}

#[test]
fn names_the_drive_cannot_hold_fail_with_their_reason() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    std::fs::create_dir_all(source.join("Docs")).unwrap();
    std::fs::create_dir_all(source.join("docs")).unwrap();
    for name in ["Docs/Report.pdf", "docs/report.pdf", "ok.txt", "a:b.txt", "CON.txt", "trailing."] {
        std::fs::write(source.join(name), name.as_bytes()).unwrap();
    }
    let manifests = case.manifests(
        "names.yaml",
        &[
            job(("local", ""), ("drive", "in/"), ""),
            fs_binding("local", &source),
            binding(&servers, &graph, "refresh-5"),
        ],
    );
    common::assert_exit(&case.run(&manifests, "names.jsonl", &[]), 1);
    let report = case.report("names.jsonl");
    assert_eq!(paths_with(&report, "copied"), ["Docs/Report.pdf", "ok.txt"], "{report:?}");
    for (path, reason) in [
        ("docs/report.pdf", "where case is ignored"),
        ("a:b.txt", "contains ':'"),
        ("CON.txt", "reserved"),
        ("trailing.", "ends with `.`"),
    ] {
        let record = report.iter().find(|r| r["path"] == path).unwrap();
        assert_eq!(record["action"], "failed", "{record}");
        assert!(record["error"].as_str().unwrap().contains(reason), "{record}");
    }
    assert_eq!(graph.files().len(), 2, "nothing renamed, nothing else written");
}

#[test]
fn a_rejected_token_is_refreshed_and_throttling_is_waited_out() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 5, 300);
    graph.reject_next(1);
    graph.throttle_next(3);
    let started = Instant::now();
    let report = case.run_ok(
        "refused",
        vec![
            job(("local", ""), ("drive", "in/"), ""),
            fs_binding("local", &source),
            binding(&servers, &graph, "refresh-3"),
        ],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), 5, "{report:?}");
    assert_eq!(graph.refusals(), (1, 3));
    // Retry-After: 1, three times, one request after another at most.
    assert!(started.elapsed() >= Duration::from_secs(1), "the throttling was not waited out");
    assert_eq!(drive_hashes(&graph, "in"), tree_hashes(&source));
}

#[test]
fn a_revoked_refresh_token_stops_the_run_with_what_to_do() {
    let servers = servers();
    let graph = GraphStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 300);
    let token = "revoked-by-the-user-0042";
    let manifests = case.manifests(
        "revoked.yaml",
        &[job(("local", ""), ("drive", "in/"), ""), fs_binding("local", &source), binding(&servers, &graph, token)],
    );
    let started = Instant::now();
    let output = case.run(&manifests, "revoked.jsonl", &[]);
    common::assert_exit(&output, 4);
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("credentials refused: binding drive: the refresh token was refused"), "{said}");
    assert!(said.contains("consent flow again"), "{said}");
    assert!(!said.contains(token), "the refresh token reached the output: {said}");
    assert!(started.elapsed() < Duration::from_secs(30), "a revoked token must not be retried for long");
    assert!(graph.files().is_empty());
}
