//! SFTP's own rules, against OpenSSH's sshd on loopback: a password login, a host key the
//! binding does not list refused before any credential is sent, a refused login named, and
//! writes staged so that no half-written file ever sits at its final path, and a killed run's
//! staged files swept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Case, assert_exit, paths_with};
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files};

/// A binding for the test account with the given secret fields and `knownHosts` line.
fn binding(servers: &Servers, fields: &[(&str, &str)], known_hosts: &str) -> String {
    let sftp = servers.sftp();
    let path = servers.secret_in_vault("sftp", fields);
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: remote}}\nspec:\n  provider: sftp\n  \
         sftp: {{host: \"{}\", port: {}, user: {}, root: \"{}\", knownHosts: \"{known_hosts}\"}}\n  vault: {{path: {path}}}\n",
        sftp.host, sftp.port, sftp.user, sftp.root
    )
}

/// What a run printed: the summary (which names why it stopped) and its errors.
fn said(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn a_password_login_copies_and_the_files_are_placed_whole() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 12, 40_000);
    let directory = servers.sftp_directory("password");
    let known_hosts = sftp.known_hosts_line(&sftp.host, sftp.port);
    let documents = vec![
        job(("local", ""), ("remote", &format!("{directory}/")), "  verify: checksum\n"),
        fs_binding("local", &source),
        binding(&servers, &[("password", &sftp.password)], &known_hosts),
    ];
    // A staged file a killed run left a while ago is swept; one being written now is not.
    let (old, young) =
        (format!(".ferry-partial/{directory}-old.part"), format!(".ferry-partial/{directory}-young.part"));
    servers.rclone(&["touch", "--timestamp", "2020-01-01T00:00:00", &servers.sftp_remote(&old)]);
    servers.rclone(&["touch", &servers.sftp_remote(&young)]);
    let report = case.run_ok("password", documents.clone(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), 12, "{report:?}");
    common::rclone_check(&servers, &source.to_string_lossy(), &servers.sftp_remote(&directory));

    // Nothing staged is left behind, and a second run proves everything by reading it back.
    let staged = servers.rclone(&["lsf", "-R", "--files-only", &servers.sftp_remote(".ferry-partial")]);
    let staged = String::from_utf8_lossy(&staged.stdout).into_owned();
    assert_eq!(
        staged.lines().filter(|name| name.starts_with(&directory)).collect::<Vec<_>>(),
        [format!("{directory}-young.part")]
    );
    servers.rclone(&["deletefile", &servers.sftp_remote(&young)]);
    let report = case.run_ok("password-again", documents, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), 12, "{report:?}");
    assert_eq!(tree_hashes(&source).len(), 12);
}

/// Sets a file's modification time to `seconds` after the epoch.
fn set_modified(path: &std::path::Path, seconds: u64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
}

#[test]
fn modification_times_travel_so_newer_sees_a_later_edit() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 500);
    let files: Vec<String> = tree_hashes(&source).into_keys().collect();
    for file in &files {
        set_modified(&source.join(file), 1_577_836_800); // 2020-01-01
    }
    let directory = servers.sftp_directory("times");
    let documents = vec![
        job(("local", ""), ("remote", &format!("{directory}/")), "  conflict: newer\n"),
        fs_binding("local", &source),
        binding(&servers, &[("password", &sftp.password)], &sftp.known_hosts_line(&sftp.host, sftp.port)),
    ];
    case.run_ok("first", documents.clone(), &[]);
    let listed = servers.rclone(&["lsjson", "-R", "--files-only", &servers.sftp_remote(&directory)]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.iter().all(|file| file["ModTime"].as_str().unwrap().starts_with("2020-01-01")), "{listed:?}");

    // An edit dated 2021, long before the upload: only a copy that kept 2020 sees it as newer.
    set_modified(&source.join(&files[1]), 1_609_459_200);
    let report = case.run_ok("edited", documents.clone(), &[]);
    assert_eq!(paths_with(&report, "copied"), [files[1].clone()], "{report:?}");
    let report = case.run_ok("unchanged", documents, &[]);
    assert_eq!(paths_with(&report, "skipped").len(), 3, "{report:?}");
}

#[test]
fn keys_that_cannot_be_paths_fail_with_their_reason() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let bucket = servers.bucket("sftp-odd-keys");
    let body = case.path("body.txt");
    std::fs::write(&body, b"body").unwrap();
    for key in ["ok.txt", "x", "x/y", ".ferry-partial/sneaky"] {
        servers.put_object_exactly(&bucket, key, &body);
    }
    let manifests = case.manifests(
        "odd.yaml",
        &[
            job(("s3", ""), ("remote", ""), ""),
            servers.s3_binding("s3", &bucket, &servers.s3_credentials_in_vault()),
            binding(&servers, &[("password", &sftp.password)], &sftp.known_hosts_line(&sftp.host, sftp.port)),
        ],
    );
    assert_exit(&case.run(&manifests, "odd.jsonl", &[]), 1);
    let report = case.report("odd.jsonl");
    assert_eq!(paths_with(&report, "copied"), ["ok.txt"], "{report:?}");
    for (path, reason) in [("x", "x/y"), ("x/y", "x"), (".ferry-partial/sneaky", "stages its writes")] {
        let record = report.iter().find(|r| r["path"] == path).unwrap();
        assert_eq!(record["action"], "failed", "{record}");
        assert!(record["error"].as_str().unwrap().contains(reason), "{record}");
    }
}

#[test]
fn sync_moves_extraneous_files_into_the_trash_path() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 100);
    let directory = servers.sftp_directory("trash");
    let stale = case.path("stale.txt");
    std::fs::write(&stale, b"no longer at the source").unwrap();
    servers.rclone(&[
        "copyto",
        &stale.to_string_lossy(),
        &servers.sftp_remote(&format!("{directory}/mirror/old/stale.txt")),
    ]);
    let report = case.run_ok(
        "sync",
        vec![
            job(
                ("local", ""),
                ("remote", &format!("{directory}/mirror/")),
                "  mode: sync\n  deleteExtraneous: true\n  trashPath: trash/\n",
            ),
            fs_binding("local", &source),
            binding(&servers, &[("password", &sftp.password)], &sftp.known_hosts_line(&sftp.host, sftp.port)),
        ],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), 3, "{report:?}");
    assert_eq!(paths_with(&report, "trashed"), ["old/stale.txt"], "{report:?}");
    let listed = servers.rclone(&["lsf", "-R", "--files-only", &servers.sftp_remote(&directory)]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.lines().any(|line| line == "mirror/old/stale.txt"), "{listed}");
    assert!(listed.lines().any(|line| line == "mirror/trash/old/stale.txt"), "{listed}");
}

#[test]
fn a_host_key_the_binding_does_not_list_is_refused_and_nothing_is_written() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 2, 100);
    let directory = servers.sftp_directory("impostor");
    // Another server's key, listed for this address: the real server is the impostor here.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClqPqAhWfKMqdQuwtabe3bBrN8Pf06FW1ccv7HfmXux";
    let known_hosts = format!("[{}]:{} {other}", sftp.host, sftp.port);
    let manifests = case.manifests(
        "impostor.yaml",
        &[
            job(("local", ""), ("remote", &format!("{directory}/")), ""),
            fs_binding("local", &source),
            binding(&servers, &[("password", &sftp.password)], &known_hosts),
        ],
    );
    let output = case.run(&manifests, "impostor.jsonl", &[]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = said(&output);
    assert!(stderr.contains("which spec.sftp.knownHosts does not list") && stderr.contains("SHA256:"), "{stderr}");
    assert!(!stderr.contains(&sftp.password), "the password reached the output");
    let listed = servers.rclone(&["lsf", "-R", &servers.sftp_remote(&directory)]);
    assert!(listed.stdout.is_empty(), "{}", String::from_utf8_lossy(&listed.stdout));
}

#[test]
fn a_refused_login_is_named_without_the_password() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 1, 100);
    let known_hosts = sftp.known_hosts_line(&sftp.host, sftp.port);
    let wrong = "not-the-password-4711";
    let manifests = case.manifests(
        "refused.yaml",
        &[
            job(("local", ""), ("remote", "refused/"), ""),
            fs_binding("local", &source),
            binding(&servers, &[("password", wrong)], &known_hosts),
        ],
    );
    let output = case.run(&manifests, "refused.jsonl", &[]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = said(&output);
    assert!(stderr.contains("refused the login of user ferry-sftp with the password"), "{stderr}");
    assert!(!stderr.contains(wrong), "the password reached the output: {stderr}");
}

#[test]
fn a_binding_without_a_key_for_the_host_is_refused_before_connecting() {
    let servers = servers();
    let sftp = servers.sftp();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 1, 100);
    let known_hosts = format!("elsewhere.example.com {}", sftp.host_key);
    let manifests = case.manifests(
        "unlisted.yaml",
        &[
            job(("local", ""), ("remote", "unlisted/"), ""),
            fs_binding("local", &source),
            binding(&servers, &[("password", &sftp.password)], &known_hosts),
        ],
    );
    let output = case.run(&manifests, "unlisted.jsonl", &[]);
    assert_exit(&output, 4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("lists no key for [{}]:{}", sftp.host, sftp.port)), "{stderr}");
}
