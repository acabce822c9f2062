//! Destination path safety: keys a filesystem cannot hold, keys that collide, and links
//! planted under a filesystem destination. Nothing is ever written outside the root, and
//! the report names every refused object with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{Case, assert_exit, paths_with};
use ferry_e2e::{Servers, fs_binding, job, servers};

fn assert_empty(directory: &Path) {
    let entries: Vec<_> = std::fs::read_dir(directory).unwrap().flatten().map(|e| e.path()).collect();
    assert!(entries.is_empty(), "written outside the destination root: {entries:?}");
}

fn record<'a>(report: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    report.iter().find(|r| r["path"] == path).unwrap_or_else(|| panic!("{path} not in the report: {report:?}"))
}

/// Asserts `path` failed at once, with an error containing every piece of `reason`.
fn assert_refused(report: &[serde_json::Value], path: &str, reason: &[&str]) {
    let record = record(report, path);
    assert_eq!(record["action"], "failed", "{record}");
    let error = record["error"].as_str().unwrap();
    for piece in reason {
        assert!(error.contains(piece), "{path}: {error:?} lacks {piece:?}");
    }
    assert!(record["attempts"].as_u64().unwrap() <= 1, "a refusal is not retried: {record}");
}

#[test]
fn a_planted_directory_link_at_a_filesystem_destination_is_never_followed() {
    // The kernel's copy, then the throttled streaming path: both stage through the safe root.
    for (name, extra) in [("fast", ""), ("throttled", "  bandwidthLimit: 1Gi\n")] {
        let case = Case::new();
        std::fs::create_dir_all(case.path("source/sub")).unwrap();
        std::fs::write(case.path("source/ok.txt"), b"fine").unwrap();
        std::fs::write(case.path("source/sub/file.txt"), b"must not leave the root").unwrap();
        std::fs::write(case.path("source/sub/big.bin"), vec![7u8; 5 << 20]).unwrap();
        std::fs::create_dir_all(case.path("destination/copy")).unwrap();
        std::fs::create_dir_all(case.path("elsewhere")).unwrap();
        symlink(case.path("elsewhere"), case.path("destination/copy/sub")).unwrap();
        let manifests = case.manifests(
            "job.yaml",
            &[
                job(("src", ""), ("dst", "copy/"), extra),
                fs_binding("src", &case.path("source")),
                fs_binding("dst", &case.path("destination")),
            ],
        );
        assert_exit(&case.run(&manifests, "run.jsonl", &[]), 1);
        let report = case.report("run.jsonl");
        assert_eq!(paths_with(&report, "copied"), ["ok.txt"], "{name}");
        for path in ["sub/file.txt", "sub/big.bin"] {
            assert_refused(&report, path, &["`copy/sub` under the destination root", "symbolic link"]);
        }
        assert_empty(&case.path("elsewhere"));
        assert_eq!(std::fs::read(case.path("destination/copy/ok.txt")).unwrap(), b"fine");
        assert!(!case.path("destination/.ferry-partial").exists(), "{name}: staging left behind");
    }
}

#[test]
fn sync_never_moves_a_file_through_a_planted_trash_link() {
    let case = Case::new();
    std::fs::create_dir_all(case.path("source")).unwrap();
    std::fs::write(case.path("source/keep.txt"), b"keep").unwrap();
    std::fs::create_dir_all(case.path("destination/copy")).unwrap();
    std::fs::write(case.path("destination/copy/stale.txt"), b"stale").unwrap();
    std::fs::create_dir_all(case.path("elsewhere")).unwrap();
    symlink(case.path("elsewhere"), case.path("destination/copy/.trash")).unwrap();
    let manifests = case.manifests(
        "job.yaml",
        &[
            job(("src", ""), ("dst", "copy/"), "  mode: sync\n  deleteExtraneous: true\n  trashPath: .trash/\n"),
            fs_binding("src", &case.path("source")),
            fs_binding("dst", &case.path("destination")),
        ],
    );
    assert_exit(&case.run(&manifests, "sync.jsonl", &[]), 1);
    let report = case.report("sync.jsonl");
    assert_refused(
        &report,
        "stale.txt",
        &["deleting failed", "`copy/.trash` under the destination root", "symbolic link"],
    );
    assert!(case.path("destination/copy/stale.txt").exists());
    assert_empty(&case.path("elsewhere"));
}

fn put_object(servers: &Servers, bucket: &str, key: &str, body: &Path) {
    servers.put_object_exactly(bucket, key, body);
}

// SeaweedFS refuses keys with `.`/`..` segments, NUL or names over 255 bytes (400), and
// stores `a//b` as `a/b` and `/x` as `x`, so those keys are covered by the unit tests of
// `destination_path`. It does keep a file `x` beside `x/y`, a `dir/` marker with content,
// and keys inside `.ferry-partial/`.
#[test]
fn odd_keys_from_s3_fail_with_their_reason_and_nothing_leaves_the_root() {
    let servers = servers();
    let case = Case::new();
    let bucket = servers.bucket("odd-keys");
    let (small, large) = (case.path("small.txt"), case.path("large.bin"));
    std::fs::write(&small, b"small").unwrap();
    std::fs::write(&large, (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect::<Vec<u8>>()).unwrap();
    for key in ["ok.txt", "x", "x/y", "x-sibling", "dir/", ".ferry-partial/sneaky", "sub/file.txt"] {
        put_object(&servers, &bucket, key, &small);
    }
    for key in ["large.bin", "sub/big.bin"] {
        put_object(&servers, &bucket, key, &large);
    }
    std::fs::create_dir_all(case.path("destination")).unwrap();
    std::fs::write(case.path("destination/stale.txt"), b"stale").unwrap();
    std::fs::create_dir_all(case.path("elsewhere")).unwrap();
    symlink(case.path("elsewhere"), case.path("destination/sub")).unwrap();
    let manifests = case.manifests(
        "job.yaml",
        &[
            job(("s3", ""), ("dst", ""), "  mode: sync\n  deleteExtraneous: true\n"),
            servers.s3_binding("s3", &bucket, &servers.s3_credentials_in_vault()),
            fs_binding("dst", &case.path("destination")),
        ],
    );
    assert_exit(&case.run(&manifests, "run.jsonl", &[]), 1);
    let report = case.report("run.jsonl");

    assert_eq!(paths_with(&report, "copied"), ["large.bin", "ok.txt", "x-sibling"], "{report:?}");
    assert_refused(&report, "x", &["key \"x\" collides with key \"x/y\""]);
    assert_refused(&report, "x/y", &["key \"x/y\" collides with key \"x\""]);
    assert_refused(&report, ".ferry-partial/sneaky", &["Ferry stages its writes"]);
    for path in ["sub/file.txt", "sub/big.bin"] {
        assert_refused(&report, path, &["`sub` under the destination root", "symbolic link"]);
    }
    assert!(report.iter().all(|r| r["path"] != "dir/"), "a directory marker is not an object");
    assert_empty(&case.path("elsewhere"));
    assert!(!case.path("destination/x").exists() && !case.path("destination/.ferry-partial").exists());
    assert_eq!(std::fs::read(case.path("destination/large.bin")).unwrap(), std::fs::read(&large).unwrap());
    // Objects failed, so sync deleted nothing.
    assert!(case.path("destination/stale.txt").exists());
    assert!(paths_with(&report, "deleted").is_empty());
}
