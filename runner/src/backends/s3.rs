//! Amazon S3 and S3-compatible stores.

use ferry_api::binding::secret_field::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};

use super::s3_copy::S3Account;
use super::server_side_copy::ServerSideAccount;
use super::{Backend, BackendInput, Capabilities, KeyLimit, ReportedChecksum};
use crate::storage::StorageError;

/// S3 lists in key order and reports MD5-based ETags; it keeps no settable modification time.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: false,
    sorted_listing: true,
    checksum: ReportedChecksum::S3Etag,
    uploads_in_parts: true,
    sets_modified_time: false,
    whole_second_times: false,
    max_key: Some(KeyLimit::Bytes(1024)),
    directory_tree: false,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator from `spec.s3` and the access key fields; nothing is read from the
/// runner's environment or instance metadata.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let s3 = input.settings(input.spec.s3.as_ref())?;
    let mut builder = opendal::services::S3::default()
        .bucket(&s3.bucket)
        .region(&s3.region)
        .access_key_id(input.required(ACCESS_KEY_ID)?)
        .secret_access_key(input.required(SECRET_ACCESS_KEY)?)
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(token) = input.optional(SESSION_TOKEN) {
        builder = builder.session_token(token);
    }
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.endpoint(endpoint);
    }
    if !s3.force_path_style {
        builder = builder.enable_virtual_host_style();
    }
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    let account = S3Account::new(
        s3.endpoint.as_deref(),
        &s3.region,
        s3.force_path_style,
        &s3.bucket,
        input.required(ACCESS_KEY_ID)?,
        input.required(SECRET_ACCESS_KEY)?,
        input.optional(SESSION_TOKEN),
    )
    .map_err(|error| StorageError::InvalidSettings { binding: input.binding.to_owned(), message: error.to_string() })?;
    Ok(Backend { server_side_copy: Some(ServerSideAccount::S3(account)), ..Backend::new(operator, CAPABILITIES) })
}
