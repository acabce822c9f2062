//! Running the `ferry-runner` binary against manifests written for one test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_e2e::Servers;

/// A test's working directory with its manifests.
pub struct Case {
    /// Holds everything the test writes.
    pub directory: tempfile::TempDir,
}

impl Case {
    /// A new, empty case.
    pub fn new() -> Self {
        Self { directory: tempfile::tempdir().unwrap() }
    }

    /// A path inside the case directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    /// Writes the manifests (job plus bindings) and returns the file.
    pub fn manifests(&self, name: &str, documents: &[String]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, documents.join("---\n")).unwrap();
        path
    }

    /// A `ferry-runner` command with Vault pointed at the shared server (when it runs).
    pub fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-runner"));
        command.args(arguments).env("FERRY_SPOOL_DIR", self.path("spool-parent"));
        if let (Ok(address), Ok(token)) =
            (std::env::var("FERRY_TEST_VAULT_ADDR"), std::env::var("FERRY_TEST_VAULT_TOKEN"))
        {
            command.env("VAULT_ADDR", address).env("VAULT_TOKEN", token);
        }
        command
    }

    /// Runs `ferry-runner run -f manifests --report report` and returns the output.
    pub fn run(&self, manifests: &Path, report: &str, extra: &[&str]) -> Output {
        let report = self.path(report);
        let mut arguments = vec!["run", "-f", manifests.to_str().unwrap(), "--report", report.to_str().unwrap()];
        arguments.extend_from_slice(extra);
        self.command(&arguments).output().unwrap()
    }

    /// Writes `documents` as `<name>.yaml`, runs them with report `<name>.jsonl`, asserts
    /// success and returns the report's records.
    pub fn run_ok(&self, name: &str, documents: Vec<String>, extra: &[&str]) -> Vec<serde_json::Value> {
        let manifests = self.manifests(&format!("{name}.yaml"), &documents);
        let report = format!("{name}.jsonl");
        assert_exit(&self.run(&manifests, &report, extra), 0);
        self.report(&report)
    }

    /// The report's records.
    pub fn report(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The spool parent holds no leftover spool.
    pub fn assert_spool_empty(&self) {
        let leftovers: Vec<_> = std::fs::read_dir(self.path("spool-parent"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "spool left behind: {leftovers:?}");
    }
}

/// Panics with the output when the exit code is not `expected`.
pub fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "exit code\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Paths recorded with `action` in a report.
pub fn paths_with(records: &[serde_json::Value], action: &str) -> Vec<String> {
    let mut paths: Vec<String> =
        records.iter().filter(|r| r["action"] == action).map(|r| r["path"].as_str().unwrap().to_owned()).collect();
    paths.sort();
    paths
}

/// `rclone check` between two remotes or directories: every file present and identical.
pub fn rclone_check(servers: &Servers, left: &str, right: &str) {
    servers.rclone(&["check", left, right, "--one-way"]);
}
