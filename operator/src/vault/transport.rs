//! One Vault request. vaultrs's middleware adds the API version, the token and the wrap TTL;
//! the body comes back in zeroizing memory and errors as the status and Vault's messages.

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde::Deserialize;
use vaultrs::api::EndpointMiddleware;
use zeroize::{Zeroize, Zeroizing};

use super::VaultError;
use crate::error::error_chain;

/// A request to one API path (relative to `/v1/`).
pub(super) struct Call {
    method: RequestMethod,
    path: String,
    body: Option<Zeroizing<Vec<u8>>>,
}

impl Call {
    /// A GET (Vault's read).
    pub(super) fn get(path: impl Into<String>) -> Self {
        Self { method: RequestMethod::GET, path: path.into(), body: None }
    }

    /// A POST of a JSON body (Vault's write/update).
    pub(super) fn post(path: impl Into<String>, body: Zeroizing<Vec<u8>>) -> Self {
        Self { method: RequestMethod::POST, path: path.into(), body: Some(body) }
    }
}

impl Endpoint for Call {
    // Bodies are parsed by the callers, from the zeroizing copy `send` returns.
    type Response = serde::de::IgnoredAny;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.body.as_ref().map(|body| body.to_vec()))
    }
}

/// vaultrs's middleware holds the token in a plain `String`: wipe it when the request is done.
struct Middleware(EndpointMiddleware);

impl Drop for Middleware {
    fn drop(&mut self) {
        self.0.token.zeroize();
    }
}

/// Why a request failed, before the caller gives it meaning.
#[derive(Debug)]
pub(super) enum CallError {
    /// Vault answered with an error status.
    Status {
        /// The HTTP status.
        code: u16,
        /// Vault's `errors` (messages, never values).
        errors: Vec<String>,
    },
    /// No answer: connection refused, TLS, timeout.
    Transport(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl CallError {
    /// The HTTP status, if Vault answered.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Transport(_) => None,
        }
    }

    /// The generic meaning: 403 is a permission problem, 5xx/429 and connection failures
    /// mean Vault is unavailable, anything else is reported with Vault's messages.
    pub(super) fn into_error(self, context: &str, address: String, path: &str, hint: &str) -> VaultError {
        match self {
            Self::Status { code: 403, .. } => VaultError::PermissionDenied {
                context: context.to_owned(),
                path: path.to_owned(),
                hint: hint.to_owned(),
            },
            Self::Status { code, errors } if code >= 500 || code == 429 => VaultError::Unreachable {
                context: context.to_owned(),
                address,
                detail: format!("HTTP {code} for {path}: {}", errors.join("; ")),
            },
            Self::Status { code, errors } => VaultError::Api {
                context: context.to_owned(),
                path: path.to_owned(),
                status: code,
                message: if errors.is_empty() { "no details".to_owned() } else { errors.join("; ") },
            },
            Self::Transport(detail) => VaultError::Unreachable { context: context.to_owned(), address, detail },
        }
    }
}

/// Sends `call` with `token` (none when empty), asking Vault to wrap the response in a
/// token with `wrap_ttl` (such as `300s`) when given. Returns the body of a 2xx answer.
pub(super) async fn send(
    http: &rustify::clients::reqwest::Client,
    token: &str,
    wrap_ttl: Option<String>,
    call: Call,
) -> Result<Zeroizing<Vec<u8>>, CallError> {
    let middleware = Middleware(EndpointMiddleware {
        token: token.to_owned(),
        version: "v1".to_owned(),
        wrap: wrap_ttl,
        namespace: None,
    });
    match call.with_middleware(&middleware.0).exec(http).await {
        Ok(result) => Ok(Zeroizing::new(result.response.into_body())),
        Err(rustify::errors::ClientError::ServerResponseError { code, content }) => {
            // Error bodies hold messages, but wipe them anyway: only `errors` is kept.
            let content = content.map(Zeroizing::new);
            let errors = content
                .as_deref()
                .and_then(|text| serde_json::from_str::<ErrorBody>(text).ok())
                .map(|body| body.errors)
                .unwrap_or_default();
            Err(CallError::Status { code, errors })
        }
        Err(error) => Err(CallError::Transport(error_chain(&error))),
    }
}

/// Header values must be visible ASCII; vaultrs's middleware panics on anything else.
pub(super) fn check_token(token: &str, what: &str) -> Result<(), VaultError> {
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(VaultError::Config(format!("{what} is empty or holds characters a Vault token cannot have")));
    }
    Ok(())
}

/// Deserializes a string straight into zeroizing memory.
pub(super) fn zeroizing_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(deserializer).map(Zeroizing::new)
}
