//! OneDrive and SharePoint document libraries, through Microsoft Graph, with OAuth 2.0
//! refresh-token credentials from Vault.

mod graph;
mod service;

use super::authorized::Authorized;
use super::drive_service::DriveService;
use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::destination_path::DriveNames;
use crate::object::DriveHash;
use crate::storage::StorageError;
use graph::Graph;

/// Microsoft's token endpoint for work, school and personal accounts.
const TOKEN_ENDPOINT: &str = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
/// What Ferry asks for on every refresh: files everywhere the user can reach, and a new
/// refresh token.
const SCOPE: &str = "offline_access Files.ReadWrite.All";

/// A drive is a folder tree listed one folder at a time that reports a QuickXorHash of every
/// file and keeps a modification time a client sets (Ferry sets whole seconds); an upload
/// session states the file's size in every fragment, so the engine hands it over.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::DriveHash(DriveHash::QuickXor),
    uploads_in_parts: true,
    sets_modified_time: true,
    whole_second_times: true,
    max_key: None,
    directory_tree: true,
    upload_needs_size: true,
    drive_names: Some(DriveNames::OneDrive),
};

/// Builds the operator from `spec.onedrive` and the application's client ID and secret and
/// the user's refresh token.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let drive = input.settings(input.spec.onedrive.as_ref())?;
    let http = Authorized::for_binding("onedrive", input, drive, TOKEN_ENDPOINT, Some(SCOPE))?;
    let graph = Graph::new(drive.api_endpoint.as_deref(), drive.drive_id.as_deref(), drive.root.as_deref(), http);
    let operator = super::operator_over(DriveService::new(graph)).map_err(|e| input.build_error(e))?;
    Ok(Backend::new(operator, CAPABILITIES))
}
