//! Google Drive through the Drive API v3, against a stand-in built from Google's documented
//! requests (`ferry_e2e::gdrive`) and a real OAuth 2.0 token endpoint (`oauth2-mock-server`,
//! started by `scripts/test-servers.sh`): round trips through folders resolved by name,
//! multipart and resumable uploads, a shared drive, Google Docs files and names held twice
//! refused with their reason, a changed byte caught, modification times kept, throttling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Case, paths_with};
use ferry_e2e::gdrive::DriveStandIn;
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

fn token_endpoint() -> String {
    std::env::var("FERRY_TEST_OAUTH_TOKEN_ENDPOINT")
        .expect("FERRY_TEST_OAUTH_TOKEN_ENDPOINT is not set: run eval \"$(scripts/test-servers.sh start)\" first")
}

/// A binding for the stand-in under the folder `Migrations` (of My Drive, or of the shared
/// drive `drive_id`).
fn binding(servers: &Servers, drive: &DriveStandIn, drive_id: Option<&str>) -> String {
    let path = servers.secret_in_vault(
        "gdrive",
        &[("clientId", "ferry-test"), ("clientSecret", "ferry-test-secret"), ("refreshToken", "refresh-g")],
    );
    let shared = drive_id.map(|id| format!(", driveId: \"{id}\"")).unwrap_or_default();
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: drive}}\nspec:\n  provider: gdrive\n  \
         gdrive: {{apiEndpoint: \"{}\", tokenEndpoint: \"{}\", root: Migrations{shared}}}\n  vault: {{path: {path}}}\n",
        drive.api_endpoint(),
        token_endpoint()
    )
}

/// Files under `Migrations/<folder>/`, hashed as `tree_hashes` hashes a tree.
fn hashes_under(files: BTreeMap<String, Vec<u8>>, folder: &str) -> BTreeMap<String, String> {
    let prefix = format!("Migrations/{folder}/");
    files
        .into_iter()
        .filter_map(|(path, content)| Some((path.strip_prefix(&prefix)?.to_owned(), ferry_e2e::content_hash(&content))))
        .collect()
}

/// A run of `local` (at `source`) to `drive` at `in/`, with `extra` spec lines.
fn upload(servers: &Servers, drive: &DriveStandIn, source: &std::path::Path, extra: &str) -> Vec<String> {
    vec![job(("local", ""), ("drive", "in/"), extra), fs_binding("local", source), binding(servers, drive, None)]
}

#[test]
fn a_round_trip_through_folders_and_resumable_uploads() {
    let servers = servers();
    let drive = DriveStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_tricky_tree(&source);
    write_small_files(&source.join("many"), 60, 500);
    let large: Vec<u8> = (0..(20u32 << 20) + 5).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(source.join("large.bin"), &large).unwrap();
    let to_drive = upload(&servers, &drive, &source, "  verify: checksum\n");
    let expected = tree_hashes(&source);
    let report = case.run_ok("to-drive", to_drive.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), expected.len(), "{report:?}");
    // Each copy is proven by the MD5 Drive computed against Ferry's of the source.
    assert!(report.iter().filter(|r| r["action"] == "copied").all(|r| r["verifiedBy"] == "contentMd5"), "{report:?}");
    assert_eq!(hashes_under(drive.files(), "in"), expected);
    assert_eq!(drive.open_sessions(), 0);

    let back = case.path("back");
    let from_drive = vec![
        job(("drive", "in/"), ("local", ""), "  verify: checksum\n"),
        to_drive[2].clone(),
        fs_binding("local", &back),
    ];
    let report = case.run_ok("from-drive", from_drive.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), expected.len(), "{report:?}");
    assert_eq!(tree_hashes(&back), expected);

    // Had two uploads made one folder twice, these lookups would find two and fail.
    let report = case.run_ok("to-drive-again", to_drive, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), expected.len(), "{report:?}");
    let report = case.run_ok("from-drive-again", from_drive, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), expected.len(), "{report:?}");
}

#[test]
fn a_shared_drive_is_reached_by_its_id() {
    let servers = servers();
    let drive = DriveStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 6, 700);
    let shared = binding(&servers, &drive, Some(&drive.shared_drive_id()));
    let report = case.run_ok(
        "shared",
        vec![job(("local", ""), ("drive", "in/"), ""), fs_binding("local", &source), shared],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), 6, "{report:?}");
    assert_eq!(hashes_under(drive.shared_files(), "in"), tree_hashes(&source));
    assert!(drive.files().is_empty(), "nothing landed in My Drive");
}

#[test]
fn docs_files_and_names_held_twice_fail_with_their_reason() {
    let servers = servers();
    let drive = DriveStandIn::start();
    drive.put("Migrations/out/ok.txt", b"fine");
    drive.put_document("Migrations/out/Plan");
    drive.put("Migrations/out/twice.txt", b"one");
    drive.put_duplicate("Migrations/out/twice.txt", b"two");
    let case = Case::new();
    let back = case.path("back");
    let documents =
        vec![job(("drive", "out/"), ("local", ""), ""), binding(&servers, &drive, None), fs_binding("local", &back)];
    let manifests = case.manifests("from-drive.yaml", &documents);
    common::assert_exit(&case.run(&manifests, "from-drive.jsonl", &[]), 1);
    let report = case.report("from-drive.jsonl");
    assert_eq!(paths_with(&report, "copied"), ["ok.txt"], "{report:?}");
    for (path, reason) in [("Plan", "export it first"), ("twice.txt", "items named")] {
        let record = report.iter().find(|r| r["path"] == path).unwrap_or_else(|| panic!("{path}: {report:?}"));
        assert_eq!(record["action"], "failed", "{record}");
        assert!(record["error"].as_str().unwrap().contains(reason), "{record}");
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
    let drive = DriveStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 4, 300);
    std::fs::write(source.join("session.bin"), vec![7u8; 9 << 20]).unwrap(); // over 4 MiB: resumable
    let files: Vec<String> = tree_hashes(&source).into_keys().collect();
    for file in &files {
        set_modified(&source.join(file), 1_577_836_800); // 2020-01-01
    }
    let documents = upload(&servers, &drive, &source, "  conflict: newer\n");
    case.run_ok("first", documents.clone(), &[]);
    assert_eq!(drive.modified("Migrations/in/session.bin").as_deref(), Some("2020-01-01T00:00:00.000Z"));

    set_modified(&source.join("session.bin"), 1_609_459_200); // an edit dated 2021
    let report = case.run_ok("edited", documents, &[]);
    assert_eq!(paths_with(&report, "copied"), ["session.bin"], "{report:?}");

    let victim = &files[0];
    let mut content = std::fs::read(source.join(victim)).unwrap();
    content[100] ^= 0x01;
    drive.put(&format!("Migrations/in/{victim}"), &content);
    let report = case.run_ok("repair", upload(&servers, &drive, &source, ""), &[]);
    assert_eq!(paths_with(&report, "copied"), std::slice::from_ref(victim), "{report:?}");
    assert_eq!(hashes_under(drive.files(), "in"), tree_hashes(&source));
}

#[test]
fn a_rejected_token_is_refreshed_and_throttling_is_waited_out() {
    let servers = servers();
    let drive = DriveStandIn::start();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 5, 300);
    drive.reject_next(1);
    drive.throttle_next(3);
    let started = Instant::now();
    let report = case.run_ok("refused", upload(&servers, &drive, &source, ""), &[]);
    assert_eq!(paths_with(&report, "copied").len(), 5, "{report:?}");
    assert_eq!(drive.refusals(), (1, 3));
    assert!(started.elapsed() >= Duration::from_secs(1), "the throttling was not waited out");
    assert_eq!(hashes_under(drive.files(), "in"), tree_hashes(&source));
}
