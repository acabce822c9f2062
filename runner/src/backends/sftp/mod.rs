//! SFTP servers (OpenSSH, NAS appliances, managed SFTP gateways), reached without an `ssh`
//! binary: a pure-Rust SSH client whose host key must be in the binding's `knownHosts`.

mod connection;
pub mod known_hosts;
mod service;

use std::sync::Arc;

use ferry_api::binding::secret_field::{PASSWORD, PRIVATE_KEY, PRIVATE_KEY_PASSPHRASE};
use zeroize::Zeroizing;

use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::storage::StorageError;
use connection::{Connector, Links, Login};
use service::SftpService;

/// SFTP lists one directory at a time, reports no checksum (copies are read back to be
/// proven), streams uploads of any size and sets modification times (in whole seconds);
/// OpenSSH keeps names to 255 bytes.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::None,
    uploads_in_parts: true,
    sets_modified_time: true,
    whole_second_times: true,
    max_key: None,
    directory_tree: true,
    upload_needs_size: false,
    drive_names: None,
};

/// Connections to one server shared by a run's transfers: enough to keep a few windows
/// of data in flight, few enough not to trip a server's `MaxStartups`.
const CONNECTIONS: usize = 4;

/// Builds the operator from `spec.sftp` and a password, or a private key (with its
/// passphrase, if it has one), from Vault.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let sftp = input.settings(input.spec.sftp.as_ref())?;
    let invalid = |message: String| StorageError::InvalidSettings { binding: input.binding.to_owned(), message };
    let trusted = known_hosts::trusted_keys(&sftp.known_hosts, &sftp.host, sftp.port).map_err(invalid)?;
    let login = match (input.optional(PRIVATE_KEY), input.optional(PASSWORD)) {
        (Some(key), _) => {
            let key = Zeroizing::new(key.to_owned());
            let decoded = russh::keys::decode_secret_key(&key, input.optional(PRIVATE_KEY_PASSPHRASE)).map_err(|error| {
                invalid(format!(
                    "the Vault field {PRIVATE_KEY:?} is not a usable private key ({error}); store it in OpenSSH format, \
                     with {PRIVATE_KEY_PASSPHRASE:?} if it is encrypted"
                ))
            })?;
            Login::Key(Arc::new(decoded))
        }
        (None, Some(password)) => Login::Password(Zeroizing::new(password.to_owned())),
        (None, None) => return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: PASSWORD }),
    };
    let connector = Connector {
        host: sftp.host.clone(),
        port: sftp.port,
        user: sftp.user.clone(),
        trusted: Arc::new(trusted),
        login,
    };
    let service = SftpService::new(Links::new(connector, CONNECTIONS), sftp.root.as_deref());
    let operator = super::operator_over(service).map_err(|e| input.build_error(e))?;
    Ok(Backend::new(operator, CAPABILITIES))
}
