//! The backend registry: one module per provider builds its OpenDAL operator from the
//! binding's block and the Vault fields, and declares what the engine may rely on. Adding a
//! provider means adding a module and its entry in [`REGISTRY`] (and its conformance entry).

use std::path::{Path, PathBuf};

use ferry_api::{CredentialBindingSpec, Provider};
use opendal::Operator;

use crate::secrets::SecretFields;
use crate::storage::StorageError;

pub mod authorized;
pub mod azblob;
pub mod azblob_copy;
pub mod drive_service;
pub mod dropbox;
pub mod fs;
pub mod gcs;
pub mod gcs_copy;
pub mod gcs_token;
pub mod gdrive;
pub mod oauth;
pub mod onedrive;
pub mod s3;
pub mod s3_copy;
pub mod s3_part_copy;
pub mod server_side_copy;
pub mod session_writer;
pub mod sftp;
pub mod streaming_put;
pub mod webdav;

/// The user-metadata entry that carries a source's modification time (Unix seconds) to a
/// backend that sets it on the file it writes (`Capabilities::sets_modified_time`).
pub const MODIFIED_METADATA: &str = "ferry-modified";

/// The user-metadata entry that carries an object's size to a backend that must state it
/// before the upload ends (`Capabilities::upload_needs_size`).
pub const SIZE_METADATA: &str = "ferry-size";

/// A provider's operator, before the layers every store gets, and its capabilities.
pub struct Backend {
    /// The provider's operator.
    pub operator: Operator,
    /// What the engine may rely on.
    pub capabilities: Capabilities,
    /// The directory behind a filesystem backend.
    pub local_root: Option<PathBuf>,
    /// Uploads over one part go here, for a provider whose OpenDAL service takes an upload
    /// only in one request from memory.
    pub streaming_put: Option<streaming_put::StreamingPut>,
    /// The account this store's bucket or container is reached with, for copies on the
    /// server between two of them (S3, Azure).
    pub server_side_copy: Option<server_side_copy::ServerSideAccount>,
    /// A credential exchanged for tokens as the run goes, proven once before it starts.
    pub credential_check: Option<Box<dyn CredentialCheck>>,
}

impl Backend {
    /// A remote backend of `operator` with nothing beside it; the builders add what they have.
    pub fn new(operator: Operator, capabilities: Capabilities) -> Self {
        Self {
            operator,
            capabilities,
            local_root: None,
            streaming_put: None,
            server_side_copy: None,
            credential_check: None,
        }
    }
}

/// A credential that OpenDAL's signer exchanges for tokens (a GCS service account's key). The
/// signer reports a refused exchange only as "failed to load signing credential", so the run
/// makes one exchange itself first: a refused key stops it with the reason and what to do.
pub trait CredentialCheck: Send + Sync {
    /// Exchanges the credential once; the error names the account and never the secret.
    fn check(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The facts about a provider that the engine's decisions depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Reading costs no network transfer (a filesystem): content can be hashed cheaply.
    pub local: bool,
    /// A recursive listing comes back in byte order of the keys.
    pub sorted_listing: bool,
    /// The checksum the provider computes over what it stored, for verification without
    /// reading the object back.
    pub checksum: ReportedChecksum,
    /// An upload can be sent in parts (multipart, blocks); otherwise the whole object goes
    /// in one request, which Ferry makes only for objects of at most one part.
    pub uploads_in_parts: bool,
    /// Modification times can be set on upload; otherwise the destination's is the upload
    /// time, and `conflict: newer` compares against that.
    pub sets_modified_time: bool,
    /// Modification times are kept in whole seconds (SFTP), so a source's time is compared
    /// without its fraction: a copy is not "older" than its source by half a second.
    pub whole_second_times: bool,
    /// The longest key a provider with flat keys takes (S3, GCS: 1024 bytes; Azure: 1024
    /// characters). Directory trees limit each name instead (see `destination_path`).
    pub max_key: Option<KeyLimit>,
    /// Keys are paths in a directory tree the server resolves (filesystems, SFTP, WebDAV):
    /// a key with `..`, `.` or empty segments, or a file where another key needs a
    /// directory, is refused there instead of landing somewhere else.
    pub directory_tree: bool,
    /// An upload must state the object's size before it ends (OneDrive's upload sessions).
    pub upload_needs_size: bool,
    /// Names follow a drive's rules and are compared without case (OneDrive, Dropbox).
    pub drive_names: Option<crate::destination_path::DriveNames>,
}

/// How long a key may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLimit {
    /// At most this many bytes of UTF-8.
    Bytes(usize),
    /// At most this many characters.
    Characters(usize),
}

impl KeyLimit {
    /// Why `key` is too long, if it is.
    pub fn refuses(self, key: &str) -> Option<String> {
        let (length, limit, unit) = match self {
            Self::Bytes(limit) => (key.len(), limit, "bytes"),
            Self::Characters(limit) => (key.chars().count(), limit, "characters"),
        };
        (length > limit).then(|| format!("is {length} {unit} long at the destination, which takes at most {limit}"))
    }
}

/// A checksum a provider computes itself over the bytes it stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportedChecksum {
    /// S3: the ETag of a single-part upload is its MD5; a multipart upload's follows S3's
    /// formula over the parts' MD5s.
    S3Etag,
    /// The MD5 the service computed (`Content-MD5`, `md5Hash`) of an upload sent in one
    /// request, or of every upload when `any_size`.
    ContentMd5 {
        /// Multi-part uploads report it too (GCS computes it over the whole object).
        any_size: bool,
    },
    /// A drive's own hash of every file (OneDrive's QuickXorHash, Dropbox's content hash).
    DriveHash(crate::object::DriveHash),
    /// Nothing comparable: verification reads the object back.
    None,
}

/// What a backend module builds from.
pub struct BackendInput<'a> {
    /// The binding's name, for messages.
    pub binding: &'a str,
    /// The binding's spec.
    pub spec: &'a CredentialBindingSpec,
    /// The Vault secret's fields, if the binding has one.
    pub secret: Option<&'a SecretFields>,
    /// Where the manifests are (local runs), for `./relative` filesystem roots.
    pub manifest_directory: Option<&'a Path>,
    /// Where a rotated OAuth refresh token is kept (local runs: the binding's Vault secret).
    pub rotation: Option<std::sync::Arc<dyn oauth::RotationStore>>,
}

impl<'a> BackendInput<'a> {
    /// The provider's settings block, or an error naming it.
    pub fn settings<T>(&self, block: Option<&'a T>) -> Result<&'a T, StorageError> {
        block.ok_or_else(|| StorageError::MissingSettings {
            binding: self.binding.to_owned(),
            block: self.spec.provider.as_str(),
        })
    }

    /// The secret's fields, or an error saying the provider needs them.
    pub fn secret(&self) -> Result<&'a SecretFields, StorageError> {
        self.secret.ok_or_else(|| StorageError::NoCredentials {
            binding: self.binding.to_owned(),
            provider: self.spec.provider,
        })
    }

    /// A field the provider cannot do without.
    pub fn required(&self, field: &'static str) -> Result<&'a str, StorageError> {
        self.secret()?
            .get(field)
            .filter(|value| !value.is_empty())
            .ok_or(StorageError::MissingField { binding: self.binding.to_owned(), field })
    }

    /// An optional field.
    pub fn optional(&self, field: &str) -> Option<&'a str> {
        self.secret.and_then(|secret| secret.get(field)).filter(|value| !value.is_empty())
    }

    /// Wraps OpenDAL's refusal of the configuration.
    pub fn build_error(&self, source: opendal::Error) -> StorageError {
        StorageError::Build { binding: self.binding.to_owned(), source }
    }
}

type Build = fn(&BackendInput<'_>) -> Result<Backend, StorageError>;

/// Every provider, with its builder: the API names no provider the runner cannot move data
/// with, and a test holds the two together.
pub const REGISTRY: [(Provider, Build); 9] = [
    (Provider::Fs, fs::build),
    (Provider::S3, s3::build),
    (Provider::Azblob, azblob::build),
    (Provider::Gcs, gcs::build),
    (Provider::Webdav, webdav::build),
    (Provider::Sftp, sftp::build),
    (Provider::Onedrive, onedrive::build),
    (Provider::Gdrive, gdrive::build),
    (Provider::Dropbox, dropbox::build),
];

/// An operator over a service Ferry implements itself (SFTP, OneDrive), with OpenDAL's own
/// layers on top, as `Operator::new` gives every service it builds from a configuration.
pub fn operator_over<S: opendal::raw::Service>(service: S) -> opendal::Result<Operator> {
    Operator::new(Prebuilt(Some(service)))
}

/// OpenDAL builds operators from a builder: this one hands over a service already made.
struct Prebuilt<S>(Option<S>);

impl<S> Default for Prebuilt<S> {
    fn default() -> Self {
        Self(None)
    }
}

impl<S: opendal::raw::Service> opendal::Builder for Prebuilt<S> {
    type Config = ();

    fn build(self) -> opendal::Result<impl opendal::raw::Service> {
        self.0.ok_or_else(|| opendal::Error::new(opendal::ErrorKind::ConfigInvalid, "the service was not configured"))
    }
}

/// Builds the backend for a binding.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let provider = input.spec.provider;
    let (_, build) = REGISTRY
        .iter()
        .find(|(registered, _)| *registered == provider)
        .ok_or_else(|| StorageError::Unsupported { binding: input.binding.to_owned(), provider })?;
    // The HTTP transport every remote service sends its requests through.
    opendal::install_default();
    build(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits_count_what_the_provider_counts() {
        let key = "é".repeat(600); // 600 characters, 1,200 bytes
        assert!(KeyLimit::Characters(1024).refuses(&key).is_none());
        let refused = KeyLimit::Bytes(1024).refuses(&key).unwrap();
        assert!(refused.contains("1200 bytes") && refused.contains("at most 1024"), "{refused}");
    }

    #[test]
    fn the_registry_holds_every_provider_the_api_names() {
        for provider in Provider::ALL {
            assert!(REGISTRY.iter().any(|(p, _)| *p == provider), "{provider}");
        }
    }
}
