//! Opt-in tests against real OneDrive, Dropbox and Google Drive accounts. Each runs only when
//! its credentials are in the environment, and otherwise says so and passes:
//!
//! ```text
//! FERRY_LIVE_ONEDRIVE_CLIENT_ID, FERRY_LIVE_ONEDRIVE_CLIENT_SECRET, FERRY_LIVE_ONEDRIVE_REFRESH_TOKEN
//! FERRY_LIVE_DROPBOX_CLIENT_ID,  FERRY_LIVE_DROPBOX_CLIENT_SECRET,  FERRY_LIVE_DROPBOX_REFRESH_TOKEN
//! FERRY_LIVE_GDRIVE_CLIENT_ID,   FERRY_LIVE_GDRIVE_CLIENT_SECRET,   FERRY_LIVE_GDRIVE_REFRESH_TOKEN
//! ```
//!
//! A run copies a small tree into a new folder under `ferry-live-tests/` in the account, back
//! again, and checks both are the same; the folder is left for the account's owner to look
//! at (and remove). The credentials go into the test servers' OpenBao, as a binding's would.
//! These tests reach the providers over the internet: CI never sets the variables.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Case, paths_with};
use ferry_e2e::{fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

/// The provider's credentials from the environment, or why the test is skipped.
fn credentials(provider: &str) -> Result<[(String, &'static str); 3], String> {
    let upper = provider.to_uppercase();
    let read = |field: &str| {
        let name = format!("FERRY_LIVE_{upper}_{field}");
        std::env::var(&name).map_err(|_| name)
    };
    match (read("CLIENT_ID"), read("CLIENT_SECRET"), read("REFRESH_TOKEN")) {
        (Ok(id), Ok(secret), Ok(token)) => Ok([(id, "clientId"), (secret, "clientSecret"), (token, "refreshToken")]),
        (id, secret, token) => {
            let missing: Vec<String> = [id, secret, token].into_iter().filter_map(Result::err).collect();
            Err(format!("{} not set", missing.join(", ")))
        }
    }
}

fn round_trip(provider: &str) {
    let fields = match credentials(provider) {
        Ok(fields) => fields,
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED live {provider} test: {why}");
            return;
        }
    };
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 12, 2000);
    write_tricky_tree(&source.join("tricky"));
    if provider == "onedrive" {
        // OneDrive refuses `?` in names (tested against the stand-in).
        std::fs::remove_file(source.join("tricky/symbols/100% sure+plus#hash?query.txt")).unwrap();
    }
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(value, name)| (*name, value.as_str())).collect();
    let path = servers.secret_in_vault(provider, &pairs);
    let folder = format!("ferry-live-tests/{}/", ferry_e2e::unique("run"));
    let binding = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: live}}\nspec:\n  provider: \
         {provider}\n  {provider}: {{}}\n  vault: {{path: {path}}}\n"
    );
    let objects = tree_hashes(&source).len();
    let report = case.run_ok(
        "up",
        vec![
            job(("local", ""), ("live", &folder), "  verify: checksum\n"),
            fs_binding("local", &source),
            binding.clone(),
        ],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    let back = case.path("back");
    let report = case.run_ok(
        "down",
        vec![job(("live", &folder), ("local", ""), "  verify: checksum\n"), binding, fs_binding("local", &back)],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    let mut found = tree_hashes(&back);
    found.retain(|key, _| !ferry_api::reports::is_reserved(key));
    assert_eq!(found, tree_hashes(&source));
}

#[test]
fn onedrive_round_trip() {
    round_trip("onedrive");
}

#[test]
fn dropbox_round_trip() {
    round_trip("dropbox");
}

#[test]
fn gdrive_round_trip() {
    round_trip("gdrive");
}
