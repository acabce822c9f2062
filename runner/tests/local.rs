//! Filesystem-only behaviour of the CLI: exit codes, dry run, sync safety, shards, resume
//! of corrupted destinations. Needs no server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Case, assert_exit, paths_with};
use ferry_e2e::{fs_binding, job, tree_hashes, write_small_files, write_tricky_tree};

fn fs_case(extra: &str) -> (Case, std::path::PathBuf) {
    let case = Case::new();
    std::fs::create_dir_all(case.path("source")).unwrap();
    let manifests = case.manifests(
        "job.yaml",
        &[
            job(("src", ""), ("dst", "copy/"), extra),
            fs_binding("src", &case.path("source")),
            fs_binding("dst", &case.path("destination")),
        ],
    );
    (case, manifests)
}

#[test]
fn copies_tricky_names_verifies_them_and_skips_them_next_time() {
    let (case, manifests) = fs_case("  verify: readback\n");
    write_tricky_tree(&case.path("source"));
    assert_exit(&case.run(&manifests, "first.jsonl", &[]), 0);
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("destination/copy")));
    let first = case.report("first.jsonl");
    assert_eq!(paths_with(&first, "copied").len(), ferry_e2e::TRICKY_NAMES.len());
    assert!(first.iter().all(|r| r["verifiedBy"] == "blake3Readback"));
    assert!(!case.path("destination/.ferry-partial").exists(), "the empty staging directory is removed");
    assert_exit(&case.run(&manifests, "second.jsonl", &[]), 0);
    assert_eq!(paths_with(&case.report("second.jsonl"), "skipped").len(), ferry_e2e::TRICKY_NAMES.len());
    case.assert_spool_empty();
}

#[test]
fn a_changed_destination_byte_is_caught_and_recopied() {
    let (case, manifests) = fs_case("");
    write_small_files(&case.path("source"), 20, 3000);
    assert_exit(&case.run(&manifests, "first.jsonl", &[]), 0);
    let victim = case.path("destination/copy/d007/f000007.bin");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1500] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    assert_exit(&case.run(&manifests, "second.jsonl", &[]), 0);
    let second = case.report("second.jsonl");
    assert_eq!(paths_with(&second, "copied"), vec!["d007/f000007.bin".to_owned()]);
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("destination/copy")));
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let (case, manifests) = fs_case("  mode: sync\n  deleteExtraneous: true\n");
    write_small_files(&case.path("source"), 5, 100);
    std::fs::create_dir_all(case.path("destination/copy")).unwrap();
    std::fs::write(case.path("destination/copy/stale.txt"), "old").unwrap();
    let output = case.run(&manifests, "dry.jsonl", &["--dry-run"]);
    assert_exit(&output, 0);
    let records = case.report("dry.jsonl");
    assert_eq!(paths_with(&records, "wouldCopy").len(), 5);
    assert_eq!(paths_with(&records, "wouldDelete"), vec!["stale.txt".to_owned()]);
    assert_eq!(tree_hashes(&case.path("destination/copy")).len(), 1, "dry run wrote or deleted something");
    assert!(String::from_utf8_lossy(&output.stdout).contains("would copy 5, would delete 1"));
}

#[test]
fn sync_deletes_only_what_the_source_lacks_and_can_use_a_trash_path() {
    let (case, manifests) = fs_case("  mode: sync\n  deleteExtraneous: true\n  trashPath: .trash/\n");
    write_small_files(&case.path("source"), 3, 10);
    std::fs::create_dir_all(case.path("destination/copy/old")).unwrap();
    std::fs::write(case.path("destination/copy/old/gone.txt"), "bye").unwrap();
    assert_exit(&case.run(&manifests, "sync.jsonl", &[]), 0);
    assert_eq!(paths_with(&case.report("sync.jsonl"), "trashed"), vec!["old/gone.txt".to_owned()]);
    assert!(!case.path("destination/copy/old/gone.txt").exists());
    assert_eq!(std::fs::read_to_string(case.path("destination/copy/.trash/old/gone.txt")).unwrap(), "bye");
    // The trash is not itself extraneous on the next run.
    assert_exit(&case.run(&manifests, "again.jsonl", &[]), 0);
    assert!(paths_with(&case.report("again.jsonl"), "trashed").is_empty());
}

#[test]
fn the_reserved_directory_is_never_copied_compared_or_deleted() {
    let (case, manifests) = fs_case("  mode: sync\n  deleteExtraneous: true\n");
    write_small_files(&case.path("source"), 3, 10);
    // A source that was itself a Ferry destination, and reports an earlier run left here.
    std::fs::create_dir_all(case.path("source/.ferry/reports")).unwrap();
    std::fs::write(case.path("source/.ferry/reports/old.jsonl"), "{}").unwrap();
    std::fs::create_dir_all(case.path("destination/copy/.ferry/reports/team/job-uid")).unwrap();
    std::fs::write(case.path("destination/copy/.ferry/reports/team/job-uid/1-0.jsonl"), "kept").unwrap();
    assert_exit(&case.run(&manifests, "sync.jsonl", &[]), 0);
    let report = case.report("sync.jsonl");
    assert!(report.iter().all(|record| !record["path"].as_str().unwrap().starts_with(".ferry/")), "{report:?}");
    assert_eq!(paths_with(&report, "copied").len(), 3);
    assert!(!case.path("destination/copy/.ferry/reports/old.jsonl").exists(), "the source's reports were copied");
    let kept = std::fs::read_to_string(case.path("destination/copy/.ferry/reports/team/job-uid/1-0.jsonl")).unwrap();
    assert_eq!(kept, "kept", "sync deleted a report");
}

#[test]
fn copies_keep_the_source_time_so_newer_sees_a_later_edit() {
    let (case, manifests) = fs_case("  conflict: newer\n");
    let file = case.path("source/notes.txt");
    std::fs::write(&file, "v1").unwrap();
    let at = |date: &str| std::time::SystemTime::from(date.parse::<jiff::Timestamp>().unwrap());
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(at("2020-01-01T00:00:00Z")).unwrap();
    assert_exit(&case.run(&manifests, "first.jsonl", &[]), 0);
    let copied = std::fs::metadata(case.path("destination/copy/notes.txt")).unwrap().modified().unwrap();
    assert_eq!(copied, at("2020-01-01T00:00:00Z"));

    // Edited later, but long before the copy was made: still newer than the copy's source.
    std::fs::write(&file, "v2").unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(at("2021-01-01T00:00:00Z")).unwrap();
    assert_exit(&case.run(&manifests, "second.jsonl", &[]), 0);
    assert_eq!(paths_with(&case.report("second.jsonl"), "copied"), vec!["notes.txt".to_owned()]);
    assert_eq!(std::fs::read_to_string(case.path("destination/copy/notes.txt")).unwrap(), "v2");
}

#[test]
fn an_empty_source_never_wipes_the_destination() {
    let (case, manifests) = fs_case("  mode: sync\n  deleteExtraneous: true\n");
    std::fs::create_dir_all(case.path("destination/copy")).unwrap();
    std::fs::write(case.path("destination/copy/precious.txt"), "keep me").unwrap();
    let output = case.run(&manifests, "sync.jsonl", &[]);
    assert_exit(&output, 1);
    assert!(String::from_utf8_lossy(&output.stdout).contains("the source listed no objects"));
    assert!(case.path("destination/copy/precious.txt").exists());
}

#[test]
fn max_delete_stops_before_deleting_anything() {
    let (case, manifests) = fs_case("  mode: sync\n  deleteExtraneous: true\n  maxDelete: 2\n");
    write_small_files(&case.path("source"), 1, 10);
    std::fs::create_dir_all(case.path("destination/copy")).unwrap();
    for index in 0..3 {
        std::fs::write(case.path(&format!("destination/copy/extra{index}.txt")), "x").unwrap();
    }
    let output = case.run(&manifests, "sync.jsonl", &[]);
    assert_exit(&output, 1);
    assert!(String::from_utf8_lossy(&output.stdout).contains("maxDelete (2)"));
    assert_eq!(tree_hashes(&case.path("destination/copy")).len(), 4, "something was deleted");
}

#[test]
fn shards_split_the_work_with_no_overlap_and_no_gap() {
    let (case, manifests) = fs_case("");
    write_small_files(&case.path("source"), 300, 64);
    let mut copied = Vec::new();
    for index in 0..4 {
        let report = format!("shard{index}.jsonl");
        assert_exit(&case.run(&manifests, &report, &["--shard", &format!("{index}/4")]), 0);
        copied.extend(paths_with(&case.report(&report), "copied"));
    }
    let total = copied.len();
    copied.sort();
    copied.dedup();
    assert_eq!(total, copied.len(), "an object was copied by two shards");
    assert_eq!(total, 300, "an object was copied by no shard");
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("destination/copy")));
}

#[test]
fn exit_codes_distinguish_invalid_input_failed_objects_and_missing_credentials() {
    let case = Case::new();
    let invalid = case.manifests("bad.yaml", &[job(("a", ""), ("b", ""), "  transfers: 0\n")]);
    let output = case.run(&invalid, "r.jsonl", &[]);
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("spec.transfers"));

    // A directory where a file must go: that object fails, the others succeed.
    let (case, manifests) = fs_case("  retries: 0\n");
    write_small_files(&case.path("source"), 3, 10);
    std::fs::create_dir_all(case.path("destination/copy/d001/f000001.bin/blocker")).unwrap();
    let output = case.run(&manifests, "r.jsonl", &[]);
    assert_exit(&output, 1);
    assert_eq!(paths_with(&case.report("r.jsonl"), "failed"), vec!["d001/f000001.bin".to_owned()]);
    assert_eq!(paths_with(&case.report("r.jsonl"), "copied").len(), 2);

    // S3 credentials live in Vault: without VAULT_ADDR the run cannot start.
    let case = Case::new();
    let binding = "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {name: remote}\nspec:\n  provider: s3\n  s3: {bucket: some-bucket, endpoint: 'http://127.0.0.1:1', forcePathStyle: true}\n  vault: {path: tenants/x/y}\n";
    let manifests = case.manifests(
        "job.yaml",
        &[job(("remote", ""), ("dst", ""), ""), binding.to_owned(), fs_binding("dst", &case.path("d"))],
    );
    let output = case.command(&["run", "-f", manifests.to_str().unwrap()]).env_remove("VAULT_ADDR").output().unwrap();
    assert_exit(&output, 4);
    assert!(String::from_utf8_lossy(&output.stderr).contains("VAULT_ADDR"));
}

#[test]
fn an_interrupted_run_exits_3_leaves_no_partial_file_and_resumes() {
    let (case, manifests) = fs_case("  bandwidthLimit: 2Mi\n");
    std::fs::create_dir_all(case.path("source")).unwrap();
    std::fs::write(case.path("source/big.bin"), vec![7u8; 24 << 20]).unwrap();
    let mut child = case
        .command(&["run", "-f", manifests.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(!case.path("destination/copy/big.bin").exists(), "a partial file appeared at the final path");
    case.assert_spool_empty();
    let unlimited = case.manifests(
        "fast.yaml",
        &[
            job(("src", ""), ("dst", "copy/"), ""),
            fs_binding("src", &case.path("source")),
            fs_binding("dst", &case.path("destination")),
        ],
    );
    assert_exit(&case.run(&unlimited, "resume.jsonl", &[]), 0);
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("destination/copy")));
}
