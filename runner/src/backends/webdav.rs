//! WebDAV servers (Nextcloud, ownCloud, Apache mod_dav, nginx, rclone serve webdav).

use ferry_api::binding::secret_field::{BEARER_TOKEN, PASSWORD, USERNAME};

use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::storage::StorageError;

/// WebDAV lists one collection at a time in no promised order and reports no checksum, so
/// every copy is verified by reading it back. OpenDAL sends a WebDAV upload in one request
/// from memory, so objects over one part are refused until uploads stream.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::None,
    uploads_in_parts: false,
    sets_modified_time: false,
    max_name_bytes: Some(255),
};

/// Builds the operator from `spec.webdav` and a user name and password, or a bearer token.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let webdav = input.settings(input.spec.webdav.as_ref())?;
    let mut builder = opendal::services::Webdav::default().endpoint(&webdav.endpoint);
    builder = match (input.optional(USERNAME), input.optional(BEARER_TOKEN)) {
        (Some(username), _) => builder.username(username).password(input.required(PASSWORD)?),
        (None, Some(token)) => builder.token(token),
        (None, None) => return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: USERNAME }),
    };
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { operator, capabilities: CAPABILITIES, local_root: None })
}
