//! The operator's Vault client and the runner's unwrapping against a real OpenBao dev
//! server (started by `scripts/test-servers.sh`). Only the Kubernetes API is faked: a tiny
//! TokenReview server that OpenBao's Kubernetes auth method calls.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;
use std::time::Duration;

use ferry_api::binding::CredentialBindingSpec;
use ferry_api::contract::PlannedBinding;
use ferry_e2e::{Servers, base64, servers, unique};
use ferry_operator::vault::{Revocation, Vault, VaultAuth, VaultConfig, VaultError, WrappedCredentials};
use ferry_runner::unwrap::{UnwrapError, unwrap_credentials};
use serde_json::json;
use zeroize::Zeroizing;

const ACCESS_KEY: &str = "AKIA-test-access-key";
const SECRET_KEY: &str = "s3cr3t/with+odd=chars \"quoted\"";

fn config(servers: &Servers, auth: VaultAuth) -> VaultConfig {
    VaultConfig { address: servers.vault_address.parse().unwrap(), ca_file: None, auth }
}

async fn root(servers: &Servers) -> Vault {
    Vault::connect(config(servers, VaultAuth::Token(Zeroizing::new(servers.vault_token.clone())))).await.unwrap()
}

async fn with_token(servers: &Servers, token: String) -> Vault {
    Vault::connect(config(servers, VaultAuth::Token(Zeroizing::new(token)))).await.unwrap()
}

/// An S3 binding's spec whose credentials are at `secret/<path>`, optionally Transit-encrypted.
fn s3_spec(path: &str, transit_key: Option<&str>) -> CredentialBindingSpec {
    let mut vault = json!({ "path": path });
    if let Some(key) = transit_key {
        vault["transitKey"] = json!(key);
    }
    serde_json::from_value(json!({ "provider": "s3", "s3": { "bucket": "ferry-test" }, "vault": vault })).unwrap()
}

fn secret_path(prefix: &str) -> String {
    format!("tenants/test/{}", unique(prefix))
}

/// The plan's view of a binding, as the operator writes it from a wrapping.
fn planned(name: &str, spec: &CredentialBindingSpec, wrapped: &WrappedCredentials) -> PlannedBinding {
    PlannedBinding {
        name: name.to_owned(),
        spec: spec.clone(),
        secret_creation_path: Some(wrapped.creation_path.clone()),
        secret_fields: wrapped.fields.clone(),
        rotation_creation_path: None,
    }
}

async fn unwrap(
    servers: &Servers,
    binding: &PlannedBinding,
    wrapped: &WrappedCredentials,
) -> Result<ferry_runner::secrets::SecretFields, UnwrapError> {
    unwrap_credentials(&servers.vault_address, None, binding, wrapped.token.clone(), Some(wrapped.expires_at)).await
}

#[tokio::test]
async fn a_complete_secret_is_ready_with_its_version() {
    let servers = servers();
    let path = secret_path("ready");
    servers.put_secret(&path, &[("accessKeyId", "old"), ("secretAccessKey", "old")]);
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY), ("extra", "x")]);
    let check = root(&servers).await.check_binding("tenant-s3", &s3_spec(&path, None)).await.unwrap();
    assert_eq!(check.version, 2);
}

#[tokio::test]
async fn a_missing_secret_is_not_found() {
    let servers = servers();
    let path = secret_path("absent");
    let error = root(&servers).await.check_binding("tenant-s3", &s3_spec(&path, None)).await.unwrap_err();
    assert_eq!(error.reason(), "SecretNotFound", "{error}");
    assert!(error.to_string().contains(&format!("secret/{path}")), "{error}");
}

#[tokio::test]
async fn a_token_without_read_access_is_denied() {
    let servers = servers();
    let path = secret_path("denied");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    // The policy reads a sibling path only.
    let policy = unique("other-path");
    servers.vault_policy(&policy, &format!("path \"secret/data/{path}-other\" {{ capabilities = [\"read\"] }}"));
    let token = servers.vault_token(&format!(r#"{{"policies":["{policy}"],"ttl":"5m"}}"#));
    let vault = with_token(&servers, token.clone()).await;

    let error = vault.check_binding("tenant-s3", &s3_spec(&path, None)).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");
    assert!(error.to_string().contains(&format!("secret/data/{path}")), "{error}");
    assert!(!error.to_string().contains(&token), "the token leaked: {error}");
    let error = vault.wrap_credentials(&s3_spec(&path, None), Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");
}

#[tokio::test]
async fn a_missing_field_is_named_without_any_value() {
    let servers = servers();
    let path = secret_path("partial");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccesKey", SECRET_KEY)]);
    let error = root(&servers).await.check_binding("tenant-s3", &s3_spec(&path, None)).await.unwrap_err();
    assert_eq!(error.reason(), "MissingField", "{error}");
    let VaultError::MissingField { missing, .. } = &error else { panic!("{error:?}") };
    assert_eq!(missing, &vec![vec!["secretAccessKey".to_owned()]]);
    let message = error.to_string();
    assert!(message.contains(&format!("secret/{path} has no field `secretAccessKey`")), "{message}");
    assert!(message.contains(&format!("bao kv patch -mount=secret {path} secretAccessKey=")), "{message}");
    for shown in [message, format!("{error:?}")] {
        assert!(!shown.contains(ACCESS_KEY) && !shown.contains("s3cr3t"), "a value leaked: {shown}");
    }
}

#[tokio::test]
async fn an_unreachable_vault_is_reported_as_such() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let config = VaultConfig {
        address: address.parse().unwrap(),
        ca_file: None,
        auth: VaultAuth::Token(Zeroizing::new("s.not-a-real-token".to_owned())),
    };
    let error = Vault::connect(config).await.unwrap_err();
    assert_eq!(error.reason(), "VaultUnreachable", "{error}");
    assert!(!error.to_string().contains("not-a-real-token"), "{error}");
}

#[tokio::test]
async fn kv_credentials_reach_the_runner_only_through_the_wrapped_read() {
    let servers = servers();
    let path = secret_path("wrapped");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let spec = s3_spec(&path, None);

    let wrapped = root(&servers).await.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    assert_eq!(wrapped.creation_path, format!("secret/data/{path}"));
    assert_eq!(wrapped.creation_path, spec.vault.as_ref().unwrap().creation_path());
    assert!(wrapped.fields.is_empty());
    let left = wrapped.expires_at.duration_since(jiff::Timestamp::now());
    assert!(left > jiff::SignedDuration::from_secs(100) && left <= jiff::SignedDuration::from_secs(121), "{left:?}");
    assert!(!format!("{wrapped:?}").contains(wrapped.token.as_str()));

    let fields = unwrap(&servers, &planned("source", &spec, &wrapped), &wrapped).await.unwrap();
    assert_eq!(fields.get("accessKeyId"), Some(ACCESS_KEY));
    assert_eq!(fields.get("secretAccessKey"), Some(SECRET_KEY));
    assert_eq!(fields.names().count(), 2);
}

#[tokio::test]
async fn transit_credentials_are_decrypted_inside_the_wrapped_response() {
    let servers = servers();
    let key = servers.transit_key("tenant");
    let path = secret_path("transit");
    let (access, secret) = (servers.transit_encrypt(&key, ACCESS_KEY), servers.transit_encrypt(&key, SECRET_KEY));
    servers.put_secret(&path, &[("secretAccessKey", &secret), ("accessKeyId", &access)]);
    let spec = s3_spec(&path, Some(&key));
    let vault = root(&servers).await;

    // The check looks at field names only: ciphertext counts as present.
    assert_eq!(vault.check_binding("tenant-s3", &spec).await.unwrap().version, 1);
    let wrapped = vault.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    assert_eq!(wrapped.creation_path, format!("transit/decrypt/{key}"));
    assert_eq!(wrapped.fields, ["accessKeyId", "secretAccessKey"]);

    let fields = unwrap(&servers, &planned("destination", &spec, &wrapped), &wrapped).await.unwrap();
    assert_eq!(fields.get("accessKeyId"), Some(ACCESS_KEY));
    assert_eq!(fields.get("secretAccessKey"), Some(SECRET_KEY));
}

#[tokio::test]
async fn a_second_unwrap_is_a_security_violation() {
    let servers = servers();
    let path = secret_path("twice");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let spec = s3_spec(&path, None);
    let wrapped = root(&servers).await.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    let binding = planned("source", &spec, &wrapped);

    // Someone else got there first.
    unwrap(&servers, &binding, &wrapped).await.unwrap();
    let error = unwrap(&servers, &binding, &wrapped).await.unwrap_err();
    assert!(matches!(error, UnwrapError::AlreadyUsed { .. }), "{error:?}");
    assert!(error.is_security_violation());
    assert!(error.to_string().contains("source"), "{error}");
    assert!(!error.to_string().contains(wrapped.token.as_str()), "{error}");
}

#[tokio::test]
async fn a_token_wrapped_by_anyone_else_is_refused() {
    let servers = servers();
    let path = secret_path("forged");
    let spec = s3_spec(&path, None);
    // An attacker wraps credentials of their choosing with sys/wrapping/wrap.
    let response = servers.vault_post_wrapped(
        "sys/wrapping/wrap",
        r#"{"data":{"accessKeyId":"attacker","secretAccessKey":"attacker"}}"#,
        "120s",
    );
    let token = ferry_e2e::json_field(&response, "token").unwrap();
    let forged = WrappedCredentials {
        token: Zeroizing::new(token.clone()),
        creation_path: spec.vault.as_ref().unwrap().creation_path(),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120),
        fields: Vec::new(),
        accessor: String::new(),
    };

    let error = unwrap(&servers, &planned("source", &spec, &forged), &forged).await.unwrap_err();
    let UnwrapError::WrongCreationPath { expected, actual, .. } = &error else { panic!("{error:?}") };
    assert_eq!(expected, &format!("secret/data/{path}"));
    assert_eq!(actual, "sys/wrapping/wrap");
    assert!(error.is_security_violation());
    // Refused before unwrapping: the forged token is still unused.
    let lookup = servers.vault_post("sys/wrapping/lookup", &format!(r#"{{"token":"{token}"}}"#));
    assert!(lookup.contains("sys/wrapping/wrap"), "{lookup}");
}

#[tokio::test]
async fn a_plan_that_disagrees_with_its_binding_is_refused() {
    let servers = servers();
    let path = secret_path("plan");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let spec = s3_spec(&path, None);
    let wrapped = root(&servers).await.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    let mut binding = planned("source", &spec, &wrapped);
    binding.secret_creation_path = Some("sys/wrapping/wrap".to_owned());
    let error = unwrap(&servers, &binding, &wrapped).await.unwrap_err();
    assert!(matches!(error, UnwrapError::PlanMismatch { .. }), "{error:?}");
    assert!(error.is_security_violation());
}

#[tokio::test]
async fn an_expired_token_is_not_a_security_violation() {
    let servers = servers();
    let path = secret_path("expired");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let spec = s3_spec(&path, None);
    let wrapped = root(&servers).await.wrap_credentials(&spec, Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let error = unwrap(&servers, &planned("source", &spec, &wrapped), &wrapped).await.unwrap_err();
    assert!(matches!(error, UnwrapError::Expired { .. }), "{error:?}");
    assert!(!error.is_security_violation());
}

#[tokio::test]
async fn unused_wrapping_tokens_are_revoked_by_accessor() {
    let servers = servers();
    let path = secret_path("revoke");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let spec = s3_spec(&path, None);
    let vault = root(&servers).await;
    let unused = vault.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    let used = vault.wrap_credentials(&spec, Duration::from_secs(120)).await.unwrap();
    assert!(!unused.accessor.is_empty() && unused.accessor != used.accessor);
    unwrap(&servers, &planned("source", &spec, &used), &used).await.unwrap();

    assert_eq!(vault.revoke_accessor(&unused.accessor).await.unwrap(), Revocation::Revoked);
    // Nobody can unwrap it any more, and revoking twice (or a used token) is no error.
    assert!(unwrap(&servers, &planned("source", &spec, &unused), &unused).await.is_err());
    vault.revoke_accessor(&unused.accessor).await.unwrap();
    vault.revoke_accessor(&used.accessor).await.unwrap();
}

#[tokio::test]
async fn renewal_keeps_a_short_lived_token_alive() {
    let servers = servers();
    let path = secret_path("renewed");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let policy = unique("reader");
    servers.vault_policy(&policy, &format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}"));
    let body = format!(r#"{{"policies":["{policy}"],"ttl":"4s","explicit_max_ttl":"120s","renewable":true}}"#);
    let renewed = with_token(&servers, servers.vault_token(&body)).await;
    let unattended = with_token(&servers, servers.vault_token(&body)).await;
    let spec = s3_spec(&path, None);
    renewed.check_binding("tenant-s3", &spec).await.unwrap();
    unattended.check_binding("tenant-s3", &spec).await.unwrap();

    let renewal = renewed.spawn_renewal();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!renewal.is_finished());
    renewed.check_binding("tenant-s3", &spec).await.unwrap();
    // The same token without renewal is gone by now: the wait was long enough to matter.
    let error = unattended.check_binding("tenant-s3", &spec).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");
    renewal.abort();
}

#[tokio::test]
async fn a_root_token_needs_no_renewal() {
    let servers = servers();
    let renewal = root(&servers).await.spawn_renewal();
    tokio::time::timeout(Duration::from_secs(5), renewal).await.unwrap().unwrap();
}

/// A fake Kubernetes API answering TokenReviews: `jwt` is the service account
/// `namespace/name` with `uid`; every other token is unauthenticated.
mod kubernetes {
    use std::sync::Arc;

    use axum::Json;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use serde_json::{Value, json};

    pub struct Account {
        pub jwt: String,
        pub reviewer_jwt: String,
        pub namespace: String,
        pub name: String,
        pub uid: String,
    }

    async fn review(
        State(account): State<Arc<Account>>,
        headers: HeaderMap,
        Json(request): Json<Value>,
    ) -> Json<Value> {
        let reviewer = headers.get("authorization").and_then(|value| value.to_str().ok());
        let authenticated = reviewer == Some(&format!("Bearer {}", account.reviewer_jwt))
            && request["spec"]["token"].as_str() == Some(account.jwt.as_str());
        let status = if authenticated {
            json!({
                "authenticated": true,
                "user": {
                    "username": format!("system:serviceaccount:{}:{}", account.namespace, account.name),
                    "uid": account.uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", account.namespace)],
                },
                "audiences": request["spec"]["audiences"].clone(),
            })
        } else {
            json!({ "authenticated": false, "error": "invalid bearer token" })
        };
        Json(json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status }))
    }

    /// Serves the TokenReview API on a free loopback port and returns its address.
    pub async fn serve(account: Account) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(review))
            .with_state(Arc::new(account));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }
}

/// OpenBao insists on a Kubernetes CA once `disable_local_ca_jwt` is set; the fake API is
/// plain HTTP, so this self-signed certificate (whose key was thrown away) is never used.
const UNUSED_KUBERNETES_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU2gAwIBAgIUGBqTGX3hjIAlEism2RvJx0RlUFowCgYIKoZIzj0EAwIw
KDEmMCQGA1UEAwwdZmVycnktdGVzdC1mYWtlLWt1YmVybmV0ZXMtY2EwIBcNMjYx
MTI0MDE0MjIxWhgPMjEyNjEwMzEwMTQyMjFaMCgxJjAkBgNVBAMMHWZlcnJ5LXRl
c3QtZmFrZS1rdWJlcm5ldGVzLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
bpvi2QRoHxyiq1qULyV3VKzmqdtGPaacYRAOHwygVcflFGmMJy06sOybMVM5SfEn
4zTTGtNSNr7188JJTgmlf6NTMFEwHQYDVR0OBBYEFEyBbPa6UWcR9HXBq+/OwOSz
wZDhMB8GA1UdIwQYMBaAFEyBbPa6UWcR9HXBq+/OwOSzwZDhMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAO8jHjUdDNubYm0v/t2hjL4J+C7okCi9
doaMAwuC6bgaAiBMBrp8DTos9k0CUv1WRCGxYAhj1Z6ciA/H0iqYsHiRYg==
-----END CERTIFICATE-----
";

/// A JWT shaped like a projected service account token. OpenBao parses its claims (the
/// signature is not checked without configured keys: the TokenReview vouches for it).
fn service_account_jwt(namespace: &str, name: &str, uid: &str, audience: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    let header = json!({ "alg": "RS256", "kid": "test", "typ": "JWT" });
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": { "name": name, "uid": uid },
            "pod": { "name": format!("{name}-7d9f8-abcde"), "uid": "5f0b6a2e-0000-4000-8000-000000000001" },
        },
    });
    let part = |value: &serde_json::Value| base64(value.to_string().as_bytes(), true);
    format!("{}.{}.{}", part(&header), part(&claims), base64(b"not-a-real-signature", true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_reads_with_the_roles_policy() {
    let servers = servers();
    let (namespace, name, uid) = ("ferry-system", "ferry-operator", "9b1a7c52-1111-4222-8333-444455556666");
    let jwt = service_account_jwt(namespace, name, uid, "vault");
    let kubernetes_host = kubernetes::serve(kubernetes::Account {
        jwt: jwt.clone(),
        reviewer_jwt: service_account_jwt("kube-system", "token-reviewer", "reviewer-uid", "vault"),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
    })
    .await;
    let reviewer_jwt = service_account_jwt("kube-system", "token-reviewer", "reviewer-uid", "vault");

    let mount = unique("kubernetes").to_lowercase();
    servers.vault_post(&format!("sys/auth/{mount}"), r#"{"type":"kubernetes"}"#);
    let auth_config = json!({
        "kubernetes_host": kubernetes_host,
        "disable_local_ca_jwt": true,
        "kubernetes_ca_cert": UNUSED_KUBERNETES_CA,
        "token_reviewer_jwt": reviewer_jwt,
    });
    servers.vault_post(&format!("auth/{mount}/config"), &auth_config.to_string());
    let path = secret_path("kubernetes");
    servers.put_secret(&path, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let policy = unique("operator");
    servers.vault_policy(&policy, &format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}"));
    let role = json!({
        "bound_service_account_names": [name],
        "bound_service_account_namespaces": [namespace],
        "audience": "vault",
        "token_policies": [policy],
        "token_ttl": "1h",
    });
    servers.vault_post(&format!("auth/{mount}/role/operator"), &role.to_string());

    let directory = tempfile::tempdir().unwrap();
    let jwt_file = directory.path().join("token");
    std::fs::write(&jwt_file, format!("{jwt}\n")).unwrap();
    let login = |role: &str, jwt_file: PathBuf| {
        Vault::connect(config(
            &servers,
            VaultAuth::Kubernetes { role: role.to_owned(), mount: mount.clone(), jwt_file },
        ))
    };

    let vault = login("operator", jwt_file.clone()).await.unwrap();
    let check = vault.check_binding("tenant-s3", &s3_spec(&path, None)).await.unwrap();
    assert_eq!(check.version, 1);
    // The role's policy reads this secret only.
    let other = secret_path("not-granted");
    servers.put_secret(&other, &[("accessKeyId", ACCESS_KEY), ("secretAccessKey", SECRET_KEY)]);
    let error = vault.check_binding("tenant-s3", &s3_spec(&other, None)).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");

    // A service account the TokenReview does not vouch for cannot log in.
    let stranger = directory.path().join("stranger");
    std::fs::write(&stranger, service_account_jwt(namespace, name, "another-uid", "vault")).unwrap();
    let error = login("operator", stranger).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");
    assert!(!error.to_string().contains(&jwt), "{error}");
    let error = login("no-such-role", jwt_file).await.unwrap_err();
    assert_eq!(error.reason(), "PermissionDenied", "{error}");
}

/// A OneDrive binding's spec whose credentials are at `secret/<path>`.
fn drive_spec(path: &str) -> CredentialBindingSpec {
    serde_json::from_value(json!({ "provider": "onedrive", "onedrive": {}, "vault": { "path": path } })).unwrap()
}

/// The write token for a rotated refresh token reaches the binding's own secret and nothing
/// else, is unwrapped once, and the runner's store writes the new token with it.
#[tokio::test]
async fn a_write_token_writes_its_one_secret_and_nothing_else() {
    use ferry_runner::backends::oauth::RotationStore;
    let servers = servers();
    let role_body = r#"{"allowed_policies_glob":["ferry-rotate-*"],"orphan":true,"renewable":false}"#;
    servers.vault_post("auth/token/roles/ferry-rotation", role_body);
    let (mine, other) = (secret_path("rotating"), secret_path("neighbour"));
    let fields = [("clientId", "c"), ("clientSecret", "s"), ("refreshToken", "old-refresh")];
    servers.put_secret(&mine, &fields);
    servers.put_secret(&other, &fields);
    let spec = drive_spec(&mine);
    let ttl = Duration::from_secs(120);
    let minted = root(&servers).await.mint_write_token(&spec, "ferry-rotation", ttl, ttl).await.unwrap();
    assert_eq!(minted.creation_path, "auth/token/create/ferry-rotation");
    let binding = PlannedBinding {
        rotation_creation_path: Some(minted.creation_path.clone()),
        ..planned("drive", &spec, &minted)
    };
    let token = Zeroizing::new(minted.token.to_string());
    let write_token =
        ferry_runner::unwrap::unwrap_write_token(&servers.vault_address, None, &binding, token, None).await.unwrap();
    // Once only.
    let again = Zeroizing::new(minted.token.to_string());
    let error = ferry_runner::unwrap::unwrap_write_token(&servers.vault_address, None, &binding, again, None)
        .await
        .unwrap_err();
    assert!(matches!(error, UnwrapError::InvalidToken { .. } | UnwrapError::AlreadyUsed { .. }), "{error:?}");

    let client = ferry_runner::vault::client_with_token(&servers.vault_address, &write_token, None).unwrap();
    let store = ferry_runner::vault::RotatedTokenToVault::new(client, "drive", spec.vault.as_ref().unwrap());
    store.store("new-refresh").await.unwrap();
    let (stored, _) = servers.read_secret(&mine);
    assert_eq!(stored["refreshToken"], "new-refresh");
    assert_eq!(stored["clientSecret"], "s", "the other fields are kept");

    // Another binding's secret is out of reach, for reading and for writing.
    let client = ferry_runner::vault::client_with_token(&servers.vault_address, &write_token, None).unwrap();
    let neighbour = drive_spec(&other);
    let read = vaultrs::kv2::read::<serde_json::Value>(&client, "secret", &other).await;
    assert!(read.is_err(), "the write token read another secret");
    let elsewhere = ferry_runner::vault::RotatedTokenToVault::new(client, "other", neighbour.vault.as_ref().unwrap());
    assert!(elsewhere.store("stolen").await.is_err());
    assert_eq!(servers.read_secret(&other).0["refreshToken"], "old-refresh");

    // Revoked at the end of the attempt: then it writes nothing more.
    store.revoke().await;
    assert!(store.store("after-the-end").await.is_err());
    assert_eq!(servers.read_secret(&mine).0["refreshToken"], "new-refresh");
}
