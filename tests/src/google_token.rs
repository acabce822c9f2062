//! A stand-in of Google's OAuth token endpoint for service accounts (the JWT bearer grant of
//! RFC 7523, as `oauth2.googleapis.com/token` takes it): each assertion's RS256 signature is
//! checked against the account's public key and its claims against the endpoint, and short
//! tokens are granted. Key files it hands out name it as their `token_uri`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The scope a Cloud Storage token must carry.
const STORAGE_SCOPE: &str = "https://www.googleapis.com/auth/devstorage";

struct Accounts {
    uri: String,
    keys: Mutex<HashMap<String, RsaPublicKey>>,
    granted: AtomicUsize,
    refused: AtomicUsize,
}

/// The running endpoint; stops when dropped.
pub struct GoogleTokenEndpoint {
    accounts: Arc<Accounts>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl GoogleTokenEndpoint {
    /// Starts the endpoint on a loopback port.
    pub fn start() -> Self {
        let (sender, receiver) = std::sync::mpsc::channel();
        let (_address, stop) = crate::serve_on_own_thread("Google token endpoint", move |address| {
            let accounts = Arc::new(Accounts {
                uri: format!("http://{address}/token"),
                keys: Mutex::new(HashMap::new()),
                granted: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
            });
            let _ = sender.send(accounts.clone());
            axum::Router::new().route("/token", axum::routing::post(grant)).with_state(accounts)
        });
        let accounts = receiver.recv().unwrap_or_else(|e| panic!("the token endpoint did not start: {e}"));
        Self { accounts, _stop: stop }
    }

    /// A new service account `email`: its key file, as Google's console gives one, naming
    /// this endpoint as `token_uri`.
    pub fn new_service_account(&self, email: &str) -> String {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap_or_else(|e| panic!("{e}"));
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap_or_else(|e| panic!("{e}"));
        self.keys().insert(email.to_owned(), key.to_public_key());
        serde_json::json!({
            "type": "service_account",
            "project_id": "ferry-test",
            "private_key_id": "0123456789abcdef",
            "private_key": pem.as_str(),
            "client_email": email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.accounts.uri,
        })
        .to_string()
    }

    /// Deletes the account's key, as an administrator would: its assertions are refused.
    pub fn delete_key(&self, email: &str) {
        self.keys().remove(email);
    }

    /// How many tokens were granted.
    pub fn granted(&self) -> usize {
        self.accounts.granted.load(Ordering::SeqCst)
    }

    /// How many assertions were refused.
    pub fn refused(&self) -> usize {
        self.accounts.refused.load(Ordering::SeqCst)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, RsaPublicKey>> {
        self.accounts.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn grant(State(accounts): State<Arc<Accounts>>, body: String) -> Response {
    match check(&accounts, &body) {
        Ok(email) => {
            let number = accounts.granted.fetch_add(1, Ordering::SeqCst);
            let token = format!("ya29.stand-in-{number}-{}", email.len());
            axum::Json(serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
                .into_response()
        }
        Err(description) => {
            accounts.refused.fetch_add(1, Ordering::SeqCst);
            let error = serde_json::json!({"error": "invalid_grant", "error_description": description});
            (StatusCode::BAD_REQUEST, axum::Json(error)).into_response()
        }
    }
}

/// The account an assertion proves, or why it proves none.
fn check(accounts: &Accounts, body: &str) -> Result<String, String> {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err("unsupported grant_type".to_owned());
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else { return Err("not a JWT".to_owned()) };
    let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
    let header: serde_json::Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    let claims: serde_json::Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("alg must be RS256".to_owned());
    }
    let email = claims["iss"].as_str().ok_or("no iss")?.to_owned();
    let key = accounts.keys.lock().map_err(|_| "poisoned")?.get(&email).cloned().ok_or("Invalid JWT Signature.")?;
    let signature = Signature::try_from(decode(signature)?.as_slice()).map_err(|e| e.to_string())?;
    let signed = &assertion[..assertion.rfind('.').unwrap_or(0)];
    VerifyingKey::<sha2::Sha256>::new(key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    if claims["aud"] != accounts.uri.as_str() {
        return Err(format!("aud must be {}", accounts.uri));
    }
    if !claims["scope"].as_str().is_some_and(|scope| scope.starts_with(STORAGE_SCOPE)) {
        return Err("the scope does not reach Cloud Storage".to_owned());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let (issued, expires) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
    if expires <= now || expires.saturating_sub(issued) > 3600 || issued > now + 60 {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".to_owned()
        );
    }
    Ok(email)
}
