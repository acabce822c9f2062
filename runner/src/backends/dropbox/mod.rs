//! Dropbox, through its API v2, with OAuth 2.0 refresh-token credentials from Vault.

mod api;
mod service;

use super::authorized::Authorized;
use super::drive_service::DriveService;
use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::destination_path::DriveNames;
use crate::object::DriveHash;
use crate::storage::StorageError;
use api::DropboxApi;

pub use api::ascii_json;

/// Dropbox's token endpoint.
const TOKEN_ENDPOINT: &str = "https://api.dropboxapi.com/oauth2/token";

/// Dropbox is a folder tree, listed recursively in one paged call, that reports its content
/// hash of every file, keeps the modification time a client sets (whole seconds), and
/// compares names without case.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::DriveHash(DriveHash::DropboxContent),
    uploads_in_parts: true,
    sets_modified_time: true,
    whole_second_times: true,
    max_key: None,
    directory_tree: true,
    upload_needs_size: false,
    drive_names: Some(DriveNames::Dropbox),
};

/// Builds the operator from `spec.dropbox` (`driveId` names a team space's namespace) and
/// the application's client ID and secret and the user's refresh token.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let settings = input.settings(input.spec.dropbox.as_ref())?;
    let http = Authorized::for_binding("dropbox", input, settings, TOKEN_ENDPOINT, None)?;
    let invalid = |message: String| StorageError::InvalidSettings { binding: input.binding.to_owned(), message };
    let api =
        DropboxApi::new(settings.api_endpoint.as_deref(), settings.drive_id.as_deref(), settings.root.as_deref(), http)
            .map_err(|error| invalid(error.to_string()))?;
    let operator = super::operator_over(DriveService::new(api)).map_err(|e| input.build_error(e))?;
    Ok(Backend::new(operator, CAPABILITIES))
}
