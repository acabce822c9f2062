//! The examples run as their comments say, against the test servers: a manifest that only
//! validates is not an example a user can follow.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::Path;

use common::{Case, paths_with};
use ferry_e2e::servers;

/// `envsubst` over `template`: every `${NAME}` replaced by the environment's value (as
/// envsubst does, an unset one by nothing; text like `${A_...}` is no name and stays).
fn substitute(template: &str) -> String {
    let mut filled = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        let name = &rest[start + 2..end];
        filled.push_str(&rest[..start]);
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            filled.push_str(&std::env::var(name).unwrap_or_default());
        } else {
            filled.push_str(&rest[start..=end]);
        }
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    filled
}

#[test]
fn local_to_sftp_runs_as_its_comments_say() {
    let servers = servers();
    let sftp = servers.sftp();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local-to-sftp");
    servers
        .put_secret("tenants/default/sftp-drop", &[("privateKey", &std::fs::read_to_string(&sftp.key_file).unwrap())]);
    let case = Case::new();
    let binding = case.path("sftp-drop.yaml");
    std::fs::write(&binding, substitute(&std::fs::read_to_string(example.join("sftp-drop.yaml.template")).unwrap()))
        .unwrap();
    let job = example.join("job.yaml");
    let run = |report: &str| {
        let output = case.run(&job, report, &["-f", binding.to_str().unwrap()]);
        common::assert_exit(&output, 0);
        case.report(report)
    };
    let report = run("first.jsonl");
    let samples = report.len();
    assert!(samples >= 5, "{report:?}");
    // Another run of this test against the same servers finds the files there already.
    assert_eq!(paths_with(&report, "copied").len() + paths_with(&report, "skipped").len(), samples);
    let report = run("again.jsonl");
    assert_eq!(paths_with(&report, "skipped").len(), samples, "{report:?}");
    common::rclone_check(
        &servers,
        &example.join("../local/sample-data").to_string_lossy(),
        &servers.sftp_remote("local-to-sftp"),
    );
}
