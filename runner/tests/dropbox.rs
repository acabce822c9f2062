//! Dropbox through its API v2, against a stand-in built from Dropbox's documented requests
//! (`ferry_e2e::dropbox`) and a real OAuth 2.0 token endpoint (`oauth2-mock-server`, started
//! by `scripts/test-servers.sh`): round trips through recursive listings and upload
//! sessions with non-ASCII names in the `Dropbox-API-Arg` header, the content hash checked
//! against rclone's, a changed byte caught, modification times kept, names Dropbox refuses,
//! throttling and a revoked refresh token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Case, paths_with};
use ferry_e2e::dropbox::DropboxStandIn;
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

fn token_endpoint() -> String {
    std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT")
        .expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT is not set: run eval \"$(scripts/test-servers.sh start)\" first")
}

/// A binding for the stand-in's account, under the folder `Migrations`, with this refresh token.
fn binding(servers: &Servers, dropbox: &DropboxStandIn, refresh_token: &str) -> String {
    let path = servers.secret_in_vault(
        "dropbox",
        &[("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", refresh_token)],
    );
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: box}}\nspec:\n  provider: dropbox\n  \
         dropbox: {{apiEndpoint: \"{}\", tokenEndpoint: \"{}\", root: Migrations}}\n  vault: {{path: {path}}}\n",
        dropbox.api_endpoint(),
        token_endpoint()
    )
}

/// The account's files under `Migrations/<folder>/`, hashed as `tree_hashes` hashes a tree.
fn account_hashes(dropbox: &DropboxStandIn, folder: &str) -> BTreeMap<String, String> {
    let prefix = format!("Migrations/{folder}/");
    dropbox
        .files()
        .into_iter()
        .filter_map(|(path, content)| Some((path.strip_prefix(&prefix)?.to_owned(), ferry_e2e::content_hash(&content))))
        .collect()
}

/// A run of `local` (at `source`) to `box` at `in/`, with `extra` spec lines.
fn upload(
    servers: &Servers,
    dropbox: &DropboxStandIn,
    source: &std::path::Path,
    extra: &str,
    token: &str,
) -> Vec<String> {
    vec![job(("local", ""), ("box", "in/"), extra), fs_binding("local", source), binding(servers, dropbox, token)]
}

#[test]
fn a_round_trip_through_recursive_listings_and_upload_sessions() {
    let servers = servers();
    let dropbox = DropboxStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_tricky_tree(&source);
    write_small_files(&source.join("many"), 60, 500);
    let large: Vec<u8> = (0..(20u32 << 20) + 5).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(source.join("large.bin"), &large).unwrap();
    let to_box = upload(&servers, &dropbox, &source, "  verify: checksum\n", "refresh-1");
    let expected = tree_hashes(&source);
    let report = case.run_ok("to-box", to_box.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), expected.len(), "{report:?}");
    // Each copy is proven by the content hash Dropbox computed against Ferry's of the source.
    assert!(report.iter().filter(|r| r["action"] == "copied").all(|r| r["verifiedBy"] == "driveHash"), "{report:?}");
    assert_eq!(account_hashes(&dropbox, "in"), expected);
    // 20 MiB went in 8 MiB chunks, never in one request.
    assert!(dropbox.largest_request() <= 8 << 20, "{}", dropbox.largest_request());
    assert_eq!(dropbox.open_sessions(), 0);

    let back = case.path("back");
    let box_binding = to_box[2].clone();
    let from_box =
        vec![job(("box", "in/"), ("local", ""), "  verify: checksum\n"), box_binding, fs_binding("local", &back)];
    let report = case.run_ok("from-box", from_box.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), expected.len(), "{report:?}");
    assert_eq!(tree_hashes(&back), expected);

    let report = case.run_ok("to-box-again", to_box, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), expected.len(), "{report:?}");
    let report = case.run_ok("from-box-again", from_box, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), expected.len(), "{report:?}");
}

#[test]
fn ferrys_content_hash_agrees_with_rclones() {
    use ferry_runner::object::{DigestSet, DriveHash, Hasher};
    let servers = servers();
    let case = Case::new();
    for size in [0usize, 1, 4 << 20, (4 << 20) + 1, (9 << 20) + 77] {
        let content: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let file = case.path(&format!("{size}.bin"));
        std::fs::write(&file, &content).unwrap();
        let mut hasher = Hasher::new(DigestSet::drive(DriveHash::DropboxContent));
        hasher.update(&content);
        let ours = hasher.finish().drive_hash.unwrap();
        let output = servers.rclone(&["hashsum", "dropbox", &file.to_string_lossy()]);
        let theirs = String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned();
        assert_eq!(ours, theirs, "{size} bytes");
    }
}

/// Sets a file's modification time to `seconds` after the epoch.
fn set_modified(path: &std::path::Path, seconds: u64) {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
}

#[test]
fn a_changed_byte_is_repaired_and_modification_times_travel() {
    let servers = servers();
    let dropbox = DropboxStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 4, 300);
    std::fs::write(source.join("session.bin"), vec![7u8; 9 << 20]).unwrap(); // over 8 MiB: a session
    let files: Vec<String> = tree_hashes(&source).into_keys().collect();
    for file in &files {
        set_modified(&source.join(file), 1_577_836_800); // 2020-01-01
    }
    let documents = upload(&servers, &dropbox, &source, "  conflict: newer\n", "refresh-2");
    case.run_ok("first", documents.clone(), &[]);
    assert_eq!(dropbox.modified("Migrations/in/session.bin").as_deref(), Some("2020-01-01T00:00:00Z"));
    assert_eq!(dropbox.modified(&format!("Migrations/in/{}", files[0])).as_deref(), Some("2020-01-01T00:00:00Z"));

    // Edits dated 2021, long before the upload: only copies that kept 2020 see them as newer.
    set_modified(&source.join("session.bin"), 1_609_459_200);
    let report = case.run_ok("edited", documents, &[]);
    assert_eq!(paths_with(&report, "copied"), ["session.bin"], "{report:?}");

    // A byte changed on the account is caught by the content hash and copied again.
    let victim = &files[0];
    let mut content = std::fs::read(source.join(victim)).unwrap();
    content[100] ^= 0x01;
    dropbox.put(&format!("Migrations/in/{victim}"), &content);
    let report = case.run_ok("repair", upload(&servers, &dropbox, &source, "", "refresh-2b"), &[]);
    assert_eq!(paths_with(&report, "copied"), std::slice::from_ref(victim), "{report:?}");
    assert_eq!(account_hashes(&dropbox, "in"), tree_hashes(&source));
}

#[test]
fn names_dropbox_cannot_hold_fail_with_their_reason() {
    let servers = servers();
    let dropbox = DropboxStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    std::fs::create_dir_all(source.join("Docs")).unwrap();
    std::fs::create_dir_all(source.join("docs")).unwrap();
    for name in ["Docs/Report.pdf", "docs/report.pdf", "ok: fine?.txt", "back\\slash.txt", "trailing "] {
        std::fs::write(source.join(name), name.as_bytes()).unwrap();
    }
    let manifests = case.manifests("names.yaml", &upload(&servers, &dropbox, &source, "", "refresh-5"));
    common::assert_exit(&case.run(&manifests, "names.jsonl", &[]), 1);
    let report = case.report("names.jsonl");
    assert_eq!(paths_with(&report, "copied"), ["Docs/Report.pdf", "ok: fine?.txt"], "{report:?}");
    for (path, reason) in [
        ("docs/report.pdf", "where case is ignored"),
        ("back\\slash.txt", "contains '\\'"),
        ("trailing ", "ends with a space"),
    ] {
        let record = report.iter().find(|r| r["path"] == path).unwrap();
        assert_eq!(record["action"], "failed", "{record}");
        assert!(record["error"].as_str().unwrap().contains(reason), "{record}");
    }
    assert_eq!(dropbox.files().len(), 2, "nothing renamed, nothing else written");
}

#[test]
fn a_rejected_token_is_refreshed_and_throttling_is_waited_out() {
    let servers = servers();
    let dropbox = DropboxStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 5, 300);
    dropbox.reject_next(1);
    dropbox.throttle_next(3);
    let started = Instant::now();
    let report = case.run_ok("refused", upload(&servers, &dropbox, &source, "", "refresh-3"), &[]);
    assert_eq!(paths_with(&report, "copied").len(), 5, "{report:?}");
    assert_eq!(dropbox.refusals(), (1, 3));
    assert!(started.elapsed() >= Duration::from_secs(1), "the throttling was not waited out");
    assert_eq!(account_hashes(&dropbox, "in"), tree_hashes(&source));
}

#[test]
fn a_revoked_refresh_token_stops_the_run_with_what_to_do() {
    let servers = servers();
    let dropbox = DropboxStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 300);
    let token = "revoked-by-the-user-0043";
    let manifests = case.manifests("revoked.yaml", &upload(&servers, &dropbox, &source, "", token));
    let output = case.run(&manifests, "revoked.jsonl", &[]);
    common::assert_exit(&output, 4);
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("binding box: the refresh token was refused"), "{said}");
    assert!(!said.contains(token), "the refresh token reached the output: {said}");
    assert!(dropbox.files().is_empty());
}
