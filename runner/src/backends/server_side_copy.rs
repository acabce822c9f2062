//! Copies a service makes itself, between two buckets or containers of one account: what a
//! backend offers for them, and what a copy reports.

use super::azblob_copy::AzblobAccount;
use super::gcs_copy::GcsAccount;
use super::s3_copy::S3Account;

/// The account behind a store, for copies on its server.
#[derive(Debug)]
pub enum ServerSideAccount {
    /// An S3 bucket (`CopyObject`).
    S3(S3Account),
    /// An Azure container (`Copy Blob`).
    Azblob(AzblobAccount),
    /// A GCS bucket (`rewrite`).
    Gcs(GcsAccount),
}

/// What a copy on the server produced.
#[derive(Debug)]
pub struct CopiedOnServer {
    /// The new object's checksum as the service reports it, in the form of
    /// `ObjectInfo::checksum` (an MD5 in hex, or S3's `<md5>-<parts>`).
    pub checksum: Option<String>,
}

/// Why a copy on the server failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The service will not copy between these two (another account's policy, a service
    /// without the feature): the object can still be streamed.
    #[error("the server refused to copy between the two ({0}); objects are streamed instead")]
    Refused(String),
    /// The service failed or could not be reached: worth retrying.
    #[error("copying on the server failed: {0}")]
    Failed(String),
}

/// Signs `request` with `signer` and sends it with `client`. A body's hash, where the
/// service wants one signed, is the caller's header to set.
pub async fn send_signed<K: reqsign_core::SigningCredential>(
    signer: &reqsign_core::Signer<K>,
    client: &reqwest::Client,
    request: http::Request<bytes::Bytes>,
) -> Result<reqwest::Response, CopyError> {
    let (mut parts, body) = request.into_parts();
    signer.sign(&mut parts, None).await.map_err(|error| CopyError::Failed(error.to_string()))?;
    client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|error| CopyError::Failed(error.without_url().to_string()))
}

impl ServerSideAccount {
    /// Whether this (destination) account can copy from `source` on the server.
    pub fn reaches(&self, source: &ServerSideAccount) -> bool {
        match (self, source) {
            (Self::S3(here), Self::S3(there)) => here.reaches(there),
            (Self::Azblob(here), Self::Azblob(there)) => here.reaches(there),
            (Self::Gcs(here), Self::Gcs(there)) => here.reaches(there),
            _ => false,
        }
    }

    /// Copies `source_key` of `source` (`size` bytes) to `key` here.
    pub async fn copy_from(
        &self,
        source: &ServerSideAccount,
        source_key: &str,
        key: &str,
        size: u64,
    ) -> Result<CopiedOnServer, CopyError> {
        match (self, source) {
            // One `CopyObject` takes 5 GiB; a larger object is copied part by part.
            (Self::S3(here), Self::S3(there)) if size > super::s3_copy::MAX_COPY_BYTES => {
                let layout = here.source_layout(there, source_key).await;
                here.copy_in_parts(there, source_key, key, size, &layout).await
            }
            (Self::S3(here), Self::S3(there)) => here.copy_from(there, source_key, key).await,
            (Self::Azblob(here), Self::Azblob(there)) => here.copy_from(there, source_key, key).await,
            (Self::Gcs(here), Self::Gcs(there)) => here.copy_from(there, source_key, key).await,
            _ => Err(CopyError::Refused("different providers".to_owned())),
        }
    }
}
