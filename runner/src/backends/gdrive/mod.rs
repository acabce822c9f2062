//! Google Drive (My Drive or a shared drive), through the Drive API v3, with OAuth 2.0
//! refresh-token credentials from Vault.

mod api;
mod service;

use super::authorized::Authorized;
use super::drive_service::DriveService;
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
    let http = Authorized::for_binding("gdrive", input, settings, TOKEN_ENDPOINT, None)?;
    let api =
        DriveApi::new(settings.api_endpoint.as_deref(), settings.drive_id.as_deref(), settings.root.as_deref(), http);
    let operator = super::operator_over(DriveService::new(api)).map_err(|e| input.build_error(e))?;
    Ok(Backend::new(operator, CAPABILITIES))
}
