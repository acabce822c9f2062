//! WebDAV servers (Nextcloud, ownCloud, Apache mod_dav, nginx, rclone serve webdav).

use ferry_api::binding::secret_field::{BEARER_TOKEN, PASSWORD, USERNAME};

use zeroize::Zeroizing;

use super::streaming_put::StreamingPut;
use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::storage::StorageError;

/// WebDAV lists one collection at a time in no promised order and reports no checksum, so
/// every copy is verified by reading it back. OpenDAL sends a WebDAV upload in one request
/// from memory, so objects over one part go through a streaming PUT instead.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: false,
    checksum: ReportedChecksum::None,
    uploads_in_parts: false,
    sets_modified_time: false,
    whole_second_times: false,
    max_key: None,
    directory_tree: true,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator from `spec.webdav` and a user name and password, or a bearer token,
/// and the streaming PUT that takes uploads over one part.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    use base64::Engine;
    let webdav = input.settings(input.spec.webdav.as_ref())?;
    let mut builder = opendal::services::Webdav::default().endpoint(&webdav.endpoint);
    let authorization = match (input.optional(USERNAME), input.optional(BEARER_TOKEN)) {
        (Some(username), _) => {
            let password = input.required(PASSWORD)?;
            builder = builder.username(username).password(password);
            let pair = Zeroizing::new(format!("{username}:{password}"));
            Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())))
        }
        (None, Some(token)) => {
            builder = builder.token(token);
            Zeroizing::new(format!("Bearer {token}"))
        }
        (None, None) => return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: USERNAME }),
    };
    let streaming_put = StreamingPut::new(&webdav.endpoint, authorization).map_err(|error| {
        StorageError::InvalidSettings { binding: input.binding.to_owned(), message: error.to_string() }
    })?;
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { streaming_put: Some(streaming_put), ..Backend::new(operator, CAPABILITIES) })
}
