//! The large data sets of issue #4 in every direction: 20,000 small files, and a 1 GiB
//! sparse file, cross-checked by independent SHA-256 hashing and `rclone check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Case, paths_with, rclone_check};
use ferry_e2e::{fs_binding, job, servers, tree_hashes, write_small_files};

/// fs -> S3 -> S3 -> fs, then fs -> fs, and the result equals the source.
fn every_direction(case: &Case, expected_objects: usize) {
    let servers = servers();
    let (first, second) = (servers.bucket("large-a"), servers.bucket("large-b"));
    let s3 = |name: &str, bucket: &str| servers.s3_binding(name, bucket, &servers.s3_credentials_in_vault());
    let source = fs_binding("src", &case.path("source"));
    let copied = |report: &[serde_json::Value]| paths_with(report, "copied").len();

    let report = case.run_ok(
        "fs-s3",
        vec![job(("src", ""), ("a", ""), "  transfers: 32\n"), source.clone(), s3("a", &first)],
        &[],
    );
    assert_eq!(copied(&report), expected_objects);
    rclone_check(&servers, &case.path("source").to_string_lossy(), &servers.s3_remote(&first));
    let report = case.run_ok(
        "s3-s3",
        vec![job(("a", ""), ("b", ""), "  transfers: 32\n"), s3("a", &first), s3("b", &second)],
        &[],
    );
    assert_eq!(copied(&report), expected_objects);
    let report = case.run_ok(
        "s3-fs",
        vec![
            job(("b", ""), ("back", ""), "  transfers: 32\n"),
            s3("b", &second),
            fs_binding("back", &case.path("back")),
        ],
        &[],
    );
    assert_eq!(copied(&report), expected_objects);
    let report = case.run_ok(
        "fs-fs",
        vec![job(("src", ""), ("copy", ""), "  transfers: 32\n"), source, fs_binding("copy", &case.path("copy"))],
        &[],
    );
    assert_eq!(copied(&report), expected_objects);
    let expected = tree_hashes(&case.path("source"));
    assert_eq!(expected.len(), expected_objects);
    assert_eq!(expected, tree_hashes(&case.path("back")));
    assert_eq!(expected, tree_hashes(&case.path("copy")));
    case.assert_spool_empty();
}

#[test]
fn twenty_thousand_small_files() {
    let case = Case::new();
    write_small_files(&case.path("source"), 20_000, 1024);
    every_direction(&case, 20_000);
}

#[test]
fn a_one_gib_sparse_file() {
    let case = Case::new();
    std::fs::create_dir_all(case.path("source")).unwrap();
    let file = std::fs::File::create(case.path("source/sparse.img")).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    // Some data at both ends, so a shifted or truncated copy cannot hash equal.
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(case.path("source/sparse.img")).unwrap();
    file.write_all(b"ferry: start of a sparse gibibyte").unwrap();
    file.seek(SeekFrom::End(-31)).unwrap();
    file.write_all(b"ferry: end of a sparse gibibyte").unwrap();
    drop(file);
    every_direction(&case, 1);
}
