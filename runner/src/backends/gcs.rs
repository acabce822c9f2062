//! Google Cloud Storage, through its JSON API (and fake-gcs-server through `endpoint`).

use ferry_api::binding::secret_field::{ACCESS_TOKEN, CREDENTIALS_JSON};

use super::gcs_copy::GcsAccount;
use super::server_side_copy::ServerSideAccount;
use super::{Backend, BackendInput, Capabilities, KeyLimit, ReportedChecksum};
use crate::storage::StorageError;

/// GCS lists in key order and computes an MD5 (`md5Hash`) over every object it stores.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: true,
    checksum: ReportedChecksum::ContentMd5 { any_size: true },
    uploads_in_parts: true,
    sets_modified_time: false,
    whole_second_times: false,
    max_key: Some(KeyLimit::Bytes(1024)),
    directory_tree: false,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator from `spec.gcs` and the service account's JSON key or an access
/// token; nothing is read from the runner's environment or the VM's metadata server.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    use base64::Engine;
    let gcs = input.settings(input.spec.gcs.as_ref())?;
    let mut builder = opendal::services::Gcs::default().bucket(&gcs.bucket).disable_vm_metadata().disable_config_load();
    let mut server_side_copy = None;
    builder = match (input.optional(CREDENTIALS_JSON), input.optional(ACCESS_TOKEN)) {
        (Some(json), _) => {
            let credential = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(json));
            builder.credential(&credential)
        }
        (None, Some(token)) => {
            // Copies on the server need a token of their own; a JSON key's exchange is OpenDAL's.
            let account = GcsAccount::new(gcs.endpoint.as_deref(), &gcs.bucket, token).map_err(|error| {
                StorageError::InvalidSettings { binding: input.binding.to_owned(), message: error.to_string() }
            })?;
            server_side_copy = Some(ServerSideAccount::Gcs(account));
            builder.token(token.to_owned())
        }
        (None, None) => {
            return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: CREDENTIALS_JSON });
        }
    };
    if let Some(endpoint) = &gcs.endpoint {
        builder = builder.endpoint(endpoint);
    }
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { operator, capabilities: CAPABILITIES, local_root: None, streaming_put: None, server_side_copy })
}
