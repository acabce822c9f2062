//! Revoking wrapping tokens no runner used, by their accessors: a finished, superseded,
//! suspended or deleted attempt leaves no token behind that could still be unwrapped.

use zeroize::Zeroizing;

use super::transport::Call;
use super::{Vault, VaultError};

/// The API path that revokes a token by its accessor.
const REVOKE_ACCESSOR_PATH: &str = "auth/token/revoke-accessor";

/// What revoking one accessor found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Vault accepted the revocation: the token, if it still lived, is gone (OpenBao answers
    /// so for a token already used, too).
    Revoked,
    /// Vault said it no longer knew the token (unwrapped or expired).
    AlreadyGone,
}

impl Vault {
    /// Revokes the token behind `accessor`, if Vault still knows it.
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<Revocation, VaultError> {
        let body = serde_json::to_vec(&serde_json::json!({ "accessor": accessor }))
            .map_err(|error| VaultError::Config(format!("encoding a revocation: {error}")))?;
        match self.send(Call::post(REVOKE_ACCESSOR_PATH, Zeroizing::new(body)), None).await {
            Ok(_) => Ok(Revocation::Revoked),
            // Vault answers 400 ("invalid accessor") for a token it no longer has.
            Err(error) if error.status() == Some(400) => Ok(Revocation::AlreadyGone),
            Err(error) => Err(error.into_error(
                "revoking an unused wrapping token",
                self.address_text(),
                REVOKE_ACCESSOR_PATH,
                &format!("grant the operator's Vault policy `update` on {REVOKE_ACCESSOR_PATH}"),
            )),
        }
    }
}
