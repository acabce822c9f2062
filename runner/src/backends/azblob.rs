//! Azure Blob Storage (and Azurite, and sovereign clouds through `endpoint`).

use ferry_api::binding::secret_field::{ACCOUNT_KEY, SAS_TOKEN};

use super::azblob_copy::AzblobAccount;
use super::server_side_copy::ServerSideAccount;
use super::{Backend, BackendInput, Capabilities, KeyLimit, ReportedChecksum};
use crate::storage::StorageError;

/// Azure lists in key order; a blob written with one Put Blob gets the MD5 the service
/// computed as its `Content-MD5`, a blob committed from blocks does not.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: true,
    checksum: ReportedChecksum::ContentMd5 { any_size: false },
    uploads_in_parts: true,
    sets_modified_time: false,
    whole_second_times: false,
    max_key: Some(KeyLimit::Characters(1024)),
    directory_tree: false,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator from `spec.azblob` and the account key or SAS token.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let azblob = input.settings(input.spec.azblob.as_ref())?;
    let endpoint =
        azblob.endpoint.clone().unwrap_or_else(|| format!("https://{}.blob.core.windows.net", azblob.account));
    let mut builder = opendal::services::Azblob::default()
        .container(&azblob.container)
        .endpoint(&endpoint)
        .account_name(&azblob.account);
    let mut server_side_copy = None;
    builder = match (input.optional(ACCOUNT_KEY), input.optional(SAS_TOKEN)) {
        (Some(key), _) => {
            // A SAS is scoped by whoever made it: only the account key surely reads another container.
            let account = AzblobAccount::new(&endpoint, &azblob.account, &azblob.container, key).map_err(|error| {
                StorageError::InvalidSettings { binding: input.binding.to_owned(), message: error.to_string() }
            })?;
            server_side_copy = Some(ServerSideAccount::Azblob(account));
            builder.account_key(key)
        }
        (None, Some(token)) => builder.sas_token(token),
        (None, None) => {
            return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: ACCOUNT_KEY });
        }
    };
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { server_side_copy, ..Backend::new(operator, CAPABILITIES) })
}
