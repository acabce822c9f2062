//! Transfers against the real servers on loopback: SeaweedFS for S3 and OpenBao for
//! credentials, cross-checked by independent hashing and by `rclone check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Case, assert_exit, paths_with, rclone_check};
use ferry_e2e::google_token::GoogleTokenEndpoint;
use ferry_e2e::{Servers, fs_binding, job, servers, tree_hashes, write_small_files, write_tricky_tree};

fn s3(servers: &Servers, name: &str, bucket: &str) -> String {
    servers.s3_binding(name, bucket, &servers.s3_credentials_in_vault())
}

#[test]
fn tricky_names_and_empty_files_move_in_every_direction() {
    let servers = servers();
    let case = Case::new();
    write_tricky_tree(&case.path("source"));
    let (first, second) = (servers.bucket("tricky-a"), servers.bucket("tricky-b"));
    let count = ferry_e2e::TRICKY_NAMES.len();

    // fs -> S3
    let report = case.run_ok(
        "fs-s3",
        vec![
            job(("src", ""), ("s3a", "in/"), ""),
            fs_binding("src", &case.path("source")),
            s3(&servers, "s3a", &first),
        ],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), count);
    assert!(report.iter().all(|r| r["verifiedBy"] == "md5Etag"), "{report:?}");
    rclone_check(&servers, &case.path("source").to_string_lossy(), &servers.s3_remote(&format!("{first}/in")));

    // S3 -> S3
    let report = case.run_ok(
        "s3-s3",
        vec![job(("s3a", "in/"), ("s3b", ""), ""), s3(&servers, "s3a", &first), s3(&servers, "s3b", &second)],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), count);
    rclone_check(&servers, &servers.s3_remote(&format!("{first}/in")), &servers.s3_remote(&second));

    // S3 -> fs
    let report = case.run_ok(
        "s3-fs",
        vec![job(("s3b", ""), ("dst", ""), ""), s3(&servers, "s3b", &second), fs_binding("dst", &case.path("back"))],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), count);
    assert!(report.iter().all(|r| r["verifiedBy"] == "blake3Readback"), "{report:?}");
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("back")));
    assert!(!case.path("back/.ferry-partial").exists(), "the empty staging directory is removed");

    // Again: everything is proven identical without copying.
    let report = case.run_ok(
        "fs-s3-again",
        vec![
            job(("src", ""), ("s3a", "in/"), ""),
            fs_binding("src", &case.path("source")),
            s3(&servers, "s3a", &first),
        ],
        &[],
    );
    assert_eq!(paths_with(&report, "skipped").len(), count, "{report:?}");
    let report = case.run_ok(
        "s3-fs-again",
        vec![job(("s3b", ""), ("dst", ""), ""), s3(&servers, "s3b", &second), fs_binding("dst", &case.path("back"))],
        &[],
    );
    assert_eq!(paths_with(&report, "skipped").len(), count, "{report:?}");
    case.assert_spool_empty();
}

#[test]
fn buckets_of_one_service_and_account_copy_on_the_server() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 6, 3000);
    write_tricky_tree(&source.join("tricky"));
    let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(source.join("large.bin"), &data).unwrap();
    let (first, second) = (servers.bucket("server-side-a"), servers.bucket("server-side-b"));
    let objects = tree_hashes(&source).len();
    case.run_ok(
        "up",
        vec![job(("src", ""), ("s3a", "in/"), ""), fs_binding("src", &source), s3(&servers, "s3a", &first)],
        &[],
    );

    let documents = || {
        vec![
            job(("s3a", "in/"), ("s3b", "out/"), "  verify: checksum\n"),
            s3(&servers, "s3a", &first),
            s3(&servers, "s3b", &second),
        ]
    };
    let report = case.run_ok("server-side", documents(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    // Every copy is proven by the ETag the service gave it (the multipart one keeps its parts').
    assert!(report.iter().all(|r| r["verifiedBy"] == "serverSideChecksum"), "{report:?}");
    common::rclone_check(
        &servers,
        &servers.s3_remote(&format!("{first}/in")),
        &servers.s3_remote(&format!("{second}/out")),
    );
    servers.download(&second, &case.path("down"));
    assert_eq!(tree_hashes(&source), tree_hashes(&case.path("down/out")));

    let report = case.run_ok("server-side-again", documents(), &[]);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{report:?}");

    // `readback` trusts no ETag: both sides are read and hashed.
    let mut readback = documents();
    readback[0] = job(("s3a", "in/"), ("s3b", "readback/"), "  verify: readback\n");
    let report = case.run_ok("server-side-readback", readback, &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    assert!(report.iter().all(|r| r["verifiedBy"] == "blake3Readback"), "{report:?}");
}

/// An Azure binding for `container` with the account key from Vault.
fn azure(servers: &Servers, name: &str, container: &str) -> String {
    let azure = servers.azure();
    let path = servers.secret_in_vault("azure", &[("accountKey", &azure.key)]);
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n  provider: azblob\n  \
         azblob: {{endpoint: \"{}\", account: {}, container: {container}}}\n  vault: {{path: {path}}}\n",
        azure.endpoint, azure.account
    )
}

#[test]
fn containers_of_one_azure_account_copy_on_the_server() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 5, 2000);
    let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(source.join("blocks.bin"), &data).unwrap();
    let (first, second) = (servers.azure_container("copy-a"), servers.azure_container("copy-b"));
    case.run_ok(
        "up",
        vec![job(("src", ""), ("a", ""), ""), fs_binding("src", &source), azure(&servers, "a", &first)],
        &[],
    );

    let documents = || {
        vec![
            job(("a", ""), ("b", "copied/"), "  verify: checksum\n"),
            azure(&servers, "a", &first),
            azure(&servers, "b", &second),
        ]
    };
    let report = case.run_ok("server-side", documents(), &[]);
    assert_eq!(paths_with(&report, "copied").len(), 6, "{report:?}");
    let by = |path: &str| report.iter().find(|r| r["path"] == path).unwrap()["verifiedBy"].clone();
    // A blob sent in one Put Blob has the service's Content-MD5, which its copy keeps; one
    // committed from blocks has none, so both sides are read.
    assert_eq!(by("d000/f000000.bin"), "serverSideChecksum", "{report:?}");
    assert_eq!(by("blocks.bin"), "blake3Readback", "{report:?}");
    common::rclone_check(&servers, &servers.azure_remote(&first), &servers.azure_remote(&format!("{second}/copied")));
    // Again: the blobs with an MD5 are proven identical; the one without is copied once more
    // on the server, since neither side can prove it without reading both.
    let report = case.run_ok("server-side-again", documents(), &[]);
    assert_eq!(paths_with(&report, "skipped").len(), 5, "{report:?}");
    assert_eq!(paths_with(&report, "copied"), ["blocks.bin"], "{report:?}");
}

/// A GCS binding for `bucket` with an access token from Vault (fake-gcs-server takes any).
fn gcs(servers: &Servers, name: &str, bucket: &str, token: &str) -> String {
    gcs_with(servers, name, bucket, ("accessToken", token))
}

/// A GCS binding for `bucket` with one credential field in Vault.
fn gcs_with(servers: &Servers, name: &str, bucket: &str, credential: (&str, &str)) -> String {
    let path = servers.secret_in_vault("gcs", &[credential]);
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n  provider: gcs\n  \
         gcs: {{endpoint: \"{}\", bucket: {bucket}}}\n  vault: {{path: {path}}}\n",
        servers.gcs().endpoint
    )
}

#[test]
fn buckets_reached_with_one_gcs_token_rewrite_on_the_server() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 4, 2000);
    write_tricky_tree(&source.join("tricky"));
    let (first, second) = (servers.gcs_bucket("rewrite-a"), servers.gcs_bucket("rewrite-b"));
    let objects = tree_hashes(&source).len();
    case.run_ok(
        "up",
        vec![job(("src", ""), ("a", ""), ""), fs_binding("src", &source), gcs(&servers, "a", &first, "t1")],
        &[],
    );

    let documents = |token: &str| {
        vec![
            job(("a", ""), ("b", "copied/"), "  verify: checksum\n"),
            gcs(&servers, "a", &first, "t1"),
            gcs(&servers, "b", &second, token),
        ]
    };
    let report = case.run_ok("rewrite", documents("t1"), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    assert!(report.iter().all(|r| r["verifiedBy"] == "serverSideChecksum"), "{report:?}");
    common::rclone_check(&servers, &servers.gcs_remote(&first), &servers.gcs_remote(&format!("{second}/copied")));
    let report = case.run_ok("rewrite-again", documents("t1"), &[]);
    assert_eq!(paths_with(&report, "skipped").len(), objects, "{report:?}");

    // Another token might not read the source bucket: the objects are streamed and proven
    // by the MD5 the service computed on upload.
    let mut streamed = documents("t2");
    streamed[0] = job(("a", ""), ("b", "streamed/"), "  verify: checksum\n");
    let report = case.run_ok("streamed", streamed, &[]);
    assert!(report.iter().all(|r| r["verifiedBy"] == "contentMd5"), "{report:?}");
}

#[test]
fn buckets_reached_with_one_service_account_key_rewrite_on_the_server() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 4, 2000);
    write_tricky_tree(&source.join("tricky"));
    let objects = tree_hashes(&source).len();
    let (first, second) = (servers.gcs_bucket("key-a"), servers.gcs_bucket("key-b"));
    // fake-gcs-server takes any token, so the key's exchange is proven at the token endpoint:
    // it checks each assertion's signature and claims. Google's endpoint is out of reach, so
    // a run that asked it would fail.
    let google = GoogleTokenEndpoint::start();
    let account = "ferry-migrator@ferry-test.iam.gserviceaccount.com";
    let key = google.new_service_account(account);
    let binding = |name: &str, bucket: &str, key: &str| gcs_with(&servers, name, bucket, ("credentialsJson", key));

    let up = vec![job(("src", ""), ("a", ""), ""), fs_binding("src", &source), binding("a", &first, &key)];
    let report = case.run_ok("up", up, &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    let once = google.granted();
    assert!(once >= 1 && google.refused() == 0, "granted {once}, refused {}", google.refused());

    // The same account on both sides reads the source: the service rewrites every object.
    let copy = |destination_key: &str| {
        vec![
            job(("a", ""), ("b", "copied/"), "  verify: checksum\n"),
            binding("a", &first, &key),
            binding("b", &second, destination_key),
        ]
    };
    let report = case.run_ok("rewrite", copy(&key), &[]);
    assert_eq!(paths_with(&report, "copied").len(), objects, "{report:?}");
    assert!(report.iter().all(|r| r["verifiedBy"] == "serverSideChecksum"), "{report:?}");
    rclone_check(&servers, &servers.gcs_remote(&first), &servers.gcs_remote(&format!("{second}/copied")));
    assert_eq!(google.refused(), 0);

    // Another account might not read the source bucket: the objects are streamed.
    let other = google.new_service_account("someone-else@ferry-test.iam.gserviceaccount.com");
    let mut streamed = copy(&other);
    streamed[0] = job(("a", ""), ("b", "streamed/"), "  verify: checksum\n");
    let report = case.run_ok("streamed", streamed, &[]);
    assert!(report.iter().all(|r| r["verifiedBy"] == "contentMd5"), "{report:?}");

    // A deleted key stops the run with the account and what to do; nothing counts as moved,
    // and the key is in neither the output nor the report.
    google.delete_key(account);
    let mut refused = copy(&key);
    refused[0] = job(("a", ""), ("b", "refused/"), "");
    let manifests = case.manifests("refused.yaml", &refused);
    let output = case.run(&manifests, "refused.jsonl", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = std::fs::read_to_string(case.path("refused.jsonl")).unwrap_or_default();
    assert_ne!(output.status.code(), Some(0), "{stderr}\n{report}");
    assert!(
        stderr.contains(account) && stderr.contains("invalid_grant") && stderr.contains("put it in Vault"),
        "{stderr}"
    );
    assert!(google.refused() >= 1);
    assert!(!report.contains("\"copied\""), "{report}");
    for text in [stderr.as_ref(), report.as_str()] {
        assert!(!text.contains("PRIVATE KEY") && !text.contains("ya29."), "{text}");
    }
}

/// Streamed from S3 to S3 (another access key, so the service cannot copy between the
/// buckets): an object whose source checksum the upload must reproduce (one part, or parts of
/// Ferry's size) is proven by the two services' checksums and never hashed in the runner; one
/// uploaded in other parts, as many as Ferry's, gets another ETag, so its spooled bytes are
/// hashed after all and it is proven by Ferry's own MD5s.
#[test]
fn s3_to_s3_streamed_is_proven_by_the_source_checksum_where_the_parts_agree() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 1000);
    let large: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(source.join("ours.bin"), &large).unwrap();
    std::fs::write(source.join("theirs.bin"), &large).unwrap();
    let (first, second) = (servers.bucket("predict-a"), servers.bucket("predict-b"));
    case.run_ok(
        "up",
        vec![job(("src", ""), ("a", ""), ""), fs_binding("src", &source), s3(&servers, "a", &first)],
        &[],
    );
    // 7 MiB parts: three, as with Ferry's 8 MiB, but another multipart ETag.
    let theirs = source.join("theirs.bin");
    let target = servers.s3_remote(&format!("{first}/theirs.bin"));
    servers.rclone(&[
        "copyto",
        "--s3-upload-cutoff",
        "5M",
        "--s3-chunk-size",
        "7M",
        &theirs.to_string_lossy(),
        &target,
    ]);

    let second_key =
        servers.secret_in_vault("s3", &[("accessKeyId", "ferry-test-2"), ("secretAccessKey", "ferry-test-secret-2")]);
    let documents = vec![
        job(("a", ""), ("b", ""), "  verify: checksum\n"),
        s3(&servers, "a", &first),
        servers.s3_binding("b", &second, &second_key),
    ];
    let report = case.run_ok("streamed", documents, &[]);
    let by = |path: &str| report.iter().find(|r| r["path"] == path).unwrap()["verifiedBy"].clone();
    assert_eq!(paths_with(&report, "copied").len(), 5, "{report:?}");
    assert_eq!(by("d000/f000000.bin"), "sourceChecksum", "{report:?}");
    assert_eq!(by("ours.bin"), "sourceChecksum", "{report:?}");
    assert_eq!(by("theirs.bin"), "multipartEtag", "{report:?}");
    rclone_check(&servers, &servers.s3_remote(&first), &servers.s3_remote(&second));
}

#[test]
fn a_key_longer_than_s3_takes_fails_with_the_reason_and_the_rest_arrive() {
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    write_small_files(&source, 3, 100);
    // Five 220-byte directory names: a fine path on a filesystem, 1,100+ bytes as an S3 key.
    let deep: std::path::PathBuf = (0..5).map(|level| format!("{level}{}", "d".repeat(219))).collect();
    std::fs::create_dir_all(source.join(&deep)).unwrap();
    std::fs::write(source.join(&deep).join("leaf.txt"), b"too deep for S3").unwrap();
    let bucket = servers.bucket("long-keys");
    let manifests = case.manifests(
        "long.yaml",
        &[job(("src", ""), ("s3", ""), ""), fs_binding("src", &source), s3(&servers, "s3", &bucket)],
    );
    assert_exit(&case.run(&manifests, "long.jsonl", &[]), 1);
    let report = case.report("long.jsonl");
    assert_eq!(paths_with(&report, "copied").len(), 3, "{report:?}");
    let failed = report.iter().find(|r| r["action"] == "failed").unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("bytes long at the destination, which takes at most 1024"), "{error}");
    assert_eq!(failed["attempts"].as_u64(), Some(0), "refused before any attempt: {failed}");
}

#[test]
fn multipart_objects_are_verified_by_their_composite_etag() {
    let servers = servers();
    let case = Case::new();
    std::fs::create_dir_all(case.path("source")).unwrap();
    let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(case.path("source/large.bin"), &data).unwrap();
    let bucket = servers.bucket("multipart");
    let documents =
        || vec![job(("src", ""), ("s3", ""), ""), fs_binding("src", &case.path("source")), s3(&servers, "s3", &bucket)];
    let report = case.run_ok("up", documents(), &[]);
    assert_eq!(report[0]["verifiedBy"], "multipartEtag", "{report:?}");
    assert!(report[0]["destinationEtag"].as_str().unwrap().ends_with("-3"));
    // A second run proves the object identical from the ETag alone.
    let report = case.run_ok("again", documents(), &[]);
    assert_eq!(report[0]["action"], "skipped", "{report:?}");
    servers.download(&bucket, &case.path("down"));
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("down")));
}

#[test]
fn a_changed_object_at_an_s3_destination_is_caught() {
    let servers = servers();
    let case = Case::new();
    write_small_files(&case.path("source"), 10, 1000);
    let bucket = servers.bucket("changed");
    let documents =
        || vec![job(("src", ""), ("s3", ""), ""), fs_binding("src", &case.path("source")), s3(&servers, "s3", &bucket)];
    case.run_ok("first", documents(), &[]);
    // Same size, one byte different.
    let mut bytes = std::fs::read(case.path("source/d003/f000003.bin")).unwrap();
    bytes[500] ^= 0xff;
    std::fs::write(case.path("tampered.bin"), bytes).unwrap();
    servers.rclone(&[
        "copyto",
        &case.path("tampered.bin").to_string_lossy(),
        &servers.s3_remote(&format!("{bucket}/d003/f000003.bin")),
    ]);
    let report = case.run_ok("second", documents(), &[]);
    assert_eq!(paths_with(&report, "copied"), vec!["d003/f000003.bin".to_owned()]);
    rclone_check(&servers, &case.path("source").to_string_lossy(), &servers.s3_remote(&bucket));
}

#[test]
fn credentials_encrypted_with_transit_are_decrypted_in_memory() {
    let servers = servers();
    let key = ferry_e2e::unique("tenant").to_lowercase();
    let _ = servers.vault_post_allowing_failure("sys/mounts/transit", r#"{"type":"transit"}"#);
    servers.vault_post(&format!("transit/keys/{key}"), "{}");
    let encrypt = |plaintext: &str| {
        let encoded = base64_encode(plaintext.as_bytes());
        let response =
            servers.vault_post(&format!("transit/encrypt/{key}"), &format!("{{\"plaintext\":\"{encoded}\"}}"));
        let value: serde_json::Value = serde_json::from_str(&response).unwrap();
        value["data"]["ciphertext"].as_str().unwrap().to_owned()
    };
    let path = format!("tenants/test/{}", ferry_e2e::unique("transit"));
    servers.put_secret(
        &path,
        &[("accessKeyId", &encrypt(&servers.s3_access_key)), ("secretAccessKey", &encrypt(&servers.s3_secret_key))],
    );
    let bucket = servers.bucket("transit");
    let binding = servers
        .s3_binding("s3", &bucket, &path)
        .replace(&format!("path: {path}\n"), &format!("path: {path}\n    transitKey: {key}\n"));
    let case = Case::new();
    write_small_files(&case.path("source"), 3, 100);
    let report = case.run_ok(
        "transit",
        vec![job(("src", ""), ("s3", ""), ""), fs_binding("src", &case.path("source")), binding],
        &[],
    );
    assert_eq!(paths_with(&report, "copied").len(), 3);
}

/// Standard base64, for Transit's plaintext field.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_missing_vault_secret_is_named_and_nothing_starts() {
    let servers = servers();
    let case = Case::new();
    let binding = servers.s3_binding("s3", "whatever", "tenants/test/does-not-exist");
    let manifests =
        case.manifests("job.yaml", &[job(("s3", ""), ("dst", ""), ""), binding, fs_binding("dst", &case.path("d"))]);
    let output = case.run(&manifests, "r.jsonl", &[]);
    assert_exit(&output, 4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no secret at secret/tenants/test/does-not-exist"), "{stderr}");
    assert!(!stderr.contains(&servers.s3_secret_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_for_a_while_is_survived() {
    let servers = servers();
    let upstream = servers.s3_endpoint.trim_start_matches("http://").to_owned();
    let proxy = ferry_e2e::proxy::FlakyProxy::start(upstream).await.unwrap();
    let case = Case::new();
    write_small_files(&case.path("source"), 200, 2000);
    let bucket = servers.bucket("flaky");
    let binding = servers
        .s3_binding("s3", &bucket, &servers.s3_credentials_in_vault())
        .replace(&servers.s3_endpoint, &format!("http://{}", proxy.address));
    let manifests = case.manifests(
        "job.yaml",
        &[job(("src", ""), ("s3", ""), "  transfers: 8\n"), fs_binding("src", &case.path("source")), binding],
    );
    proxy.set_failing(true);
    let mut command =
        case.command(&["run", "-f", manifests.to_str().unwrap(), "--report", case.path("r.jsonl").to_str().unwrap()]);
    let handle = tokio::task::spawn_blocking(move || command.output());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    proxy.set_failing(false);
    let output = handle.await.unwrap().unwrap();
    assert_exit(&output, 0);
    assert!(proxy.cut_connections() > 0, "the proxy never failed a request");
    rclone_check(&servers, &case.path("source").to_string_lossy(), &servers.s3_remote(&bucket));
}

#[test]
fn a_killed_run_resumes_without_copying_anything_twice() {
    let servers = servers();
    let case = Case::new();
    write_small_files(&case.path("source"), 1500, 8 << 10);
    let bucket = servers.bucket("resume");
    let manifests = case.manifests(
        "job.yaml",
        &[
            job(("src", ""), ("s3", ""), "  transfers: 4\n"),
            fs_binding("src", &case.path("source")),
            s3(&servers, "s3", &bucket),
        ],
    );
    let first_report = case.path("first.jsonl");
    let mut child = case
        .command(&["run", "-f", manifests.to_str().unwrap(), "--report", first_report.to_str().unwrap()])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&first_report).map(|t| t.lines().count()).unwrap_or(0) < 100 {
        assert!(started.elapsed().as_secs() < 120, "the first run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let copied_first =
        paths_with(&case.report("first.jsonl").into_iter().filter(|r| r.is_object()).collect::<Vec<_>>(), "copied");
    assert!(!copied_first.is_empty() && copied_first.len() < 1500, "kill came too late: {}", copied_first.len());
    assert_exit(&case.run(&manifests, "second.jsonl", &[]), 0);
    let second = case.report("second.jsonl");
    let copied_second = paths_with(&second, "copied");
    for path in &copied_first {
        assert!(!copied_second.contains(path), "{path} was verified in the first run and copied again");
    }
    assert_eq!(
        copied_first.len() + copied_second.len() + paths_with(&second, "skipped").len() - copied_first.len(),
        1500
    );
    rclone_check(&servers, &case.path("source").to_string_lossy(), &servers.s3_remote(&bucket));
}

#[test]
fn shards_of_an_s3_source_split_the_work_exactly() {
    let servers = servers();
    let case = Case::new();
    write_small_files(&case.path("source"), 250, 100);
    std::fs::write(case.path("source/top-level-file.txt"), "at the root").unwrap();
    let bucket = servers.bucket("shards");
    case.run_ok(
        "seed",
        vec![job(("src", ""), ("s3", ""), ""), fs_binding("src", &case.path("source")), s3(&servers, "s3", &bucket)],
        &[],
    );
    let mut copied = Vec::new();
    for index in 0..3 {
        let documents =
            vec![job(("s3", ""), ("dst", ""), ""), s3(&servers, "s3", &bucket), fs_binding("dst", &case.path("back"))];
        let report = case.run_ok(&format!("shard{index}"), documents, &["--shard", &format!("{index}/3")]);
        assert!(paths_with(&report, "skipped").is_empty(), "a shard saw another shard's objects");
        copied.extend(paths_with(&report, "copied"));
    }
    let total = copied.len();
    copied.sort();
    copied.dedup();
    assert_eq!((total, copied.len()), (251, 251), "overlap or gap between shards");
    assert_eq!(tree_hashes(&case.path("source")), tree_hashes(&case.path("back")));
}

/// An object over the 5 GiB one `CopyObject` takes is copied part by part on the server
/// (`UploadPartCopy`), here with a 20 MiB object Ferry uploaded in 8 MiB parts: the copy
/// takes the source's part size from `HEAD ?partNumber=1`, so that on S3 its ETag is the
/// source's.
#[test]
fn large_objects_are_copied_on_the_server_part_by_part() {
    use ferry_runner::backends::s3_copy::S3Account;
    let servers = servers();
    let case = Case::new();
    let source = case.path("source");
    std::fs::create_dir_all(&source).unwrap();
    let data: Vec<u8> = (0..(20u32 << 20) + 11).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(source.join("large.bin"), &data).unwrap();
    let (first, second) = (servers.bucket("part-copy-a"), servers.bucket("part-copy-b"));
    let uploaded = case.run_ok(
        "up",
        vec![job(("src", ""), ("s3a", ""), ""), fs_binding("src", &source), s3(&servers, "s3a", &first)],
        &[],
    );
    let account = |bucket: &str| {
        let (key, secret) = (&servers.s3_access_key, &servers.s3_secret_key);
        S3Account::new(Some(&servers.s3_endpoint), "us-east-1", true, bucket, key, secret, None).unwrap()
    };
    let (from, to) = (account(&first), account(&second));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let copied = runtime.block_on(async {
        let layout = to.source_layout(&from, "large.bin").await;
        assert_eq!(layout.first_part, Some(8 << 20), "{layout:?}");
        to.copy_in_parts(&from, "large.bin", "copied/large.bin", data.len() as u64, &layout).await.unwrap()
    });
    let etag = copied.checksum.unwrap();
    assert!(etag.ends_with("-3"), "three parts of 8 MiB: {etag}");
    // On AWS the copy's ETag is the source's (same parts, same MD5s). SeaweedFS answers a
    // part copy with an ETag of its own chunks (`<md5>-2` for an 8 MiB part), so there the
    // ETags differ and `verify: checksum` reads both sides back instead; the bytes are equal.
    assert!(uploaded[0]["destinationEtag"].as_str().unwrap().ends_with("-3"));
    servers.download(&second, &case.path("down"));
    assert_eq!(std::fs::read(case.path("down/copied/large.bin")).unwrap(), data);
}
