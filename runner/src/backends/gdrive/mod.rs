//! Google Drive (My Drive or a shared drive), through the Drive API v3, with OAuth 2.0
//! refresh-token credentials from Vault.

mod api;
mod service;

use std::sync::Arc;

use ferry_api::binding::secret_field::{CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN};
use zeroize::Zeroizing;

use super::authorized::Authorized;
use super::drive_service::DriveService;
use super::oauth::{Client, Tokens};
use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::storage::StorageError;
use api::DriveApi;

/// Google's token endpoint.
const TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";

/// A drive is a folder tree listed one folder at a time that reports the MD5 of every binary
/// file and keeps the modification time a client sets (to the millisecond); names are
/// compared with case, and any character but `/` is allowed.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::ContentMd5 { any_size: true },
    uploads_in_parts: true,
    sets_modified_time: true,
    whole_second_times: false,
    max_key: None,
    directory_tree: true,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator from `spec.gdrive` (`driveId` names a shared drive) and the
/// application's client ID and secret and the user's refresh token.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let settings = input.settings(input.spec.gdrive.as_ref())?;
    let client = Client {
        binding: input.binding.to_owned(),
        token_endpoint: settings.token_endpoint.clone().unwrap_or_else(|| TOKEN_ENDPOINT.to_owned()),
        client_id: input.required(CLIENT_ID)?.to_owned(),
        client_secret: Zeroizing::new(input.required(CLIENT_SECRET)?.to_owned()),
        scope: None,
    };
    let refresh_token = Zeroizing::new(input.required(REFRESH_TOKEN)?.to_owned());
    let tokens = Arc::new(Tokens::new(client, refresh_token, input.rotation.clone()));
    let http = Authorized::new("gdrive", tokens).map_err(|error| StorageError::InvalidSettings {
        binding: input.binding.to_owned(),
        message: error.to_string(),
    })?;
    let api =
        DriveApi::new(settings.api_endpoint.as_deref(), settings.drive_id.as_deref(), settings.root.as_deref(), http);
    let operator = super::operator_over(DriveService::new(api)).map_err(|e| input.build_error(e))?;
    Ok(Backend { operator, capabilities: CAPABILITIES, local_root: None, streaming_put: None, server_side_copy: None })
}
