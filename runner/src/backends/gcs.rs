//! Google Cloud Storage, through its JSON API (and fake-gcs-server through `endpoint`).

use ferry_api::binding::secret_field::{ACCESS_TOKEN, CREDENTIALS_JSON};

use super::gcs_copy::{GcsAccount, GcsIdentity};
use super::gcs_token::ServiceAccountTokens;
use super::server_side_copy::ServerSideAccount;
use super::{Backend, BackendInput, Capabilities, CredentialCheck, KeyLimit, ReportedChecksum};
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
    let gcs = input.settings(input.spec.gcs.as_ref())?;
    let invalid = |message: String| StorageError::InvalidSettings { binding: input.binding.to_owned(), message };
    let mut builder = opendal::services::Gcs::default().bucket(&gcs.bucket).disable_vm_metadata().disable_config_load();
    let identity = match (input.optional(CREDENTIALS_JSON), input.optional(ACCESS_TOKEN)) {
        (Some(json), _) => {
            match ServiceAccountTokens::from_key_file(json).map_err(|error| invalid(error.to_string()))? {
                Some(tokens) => {
                    builder = builder.credential_provider(tokens.clone());
                    Some(GcsIdentity::ServiceAccount(tokens))
                }
                None => {
                    // Another kind of credential file (an authorized user, workload identity
                    // federation): OpenDAL exchanges it, and copies stream through the runner.
                    use base64::Engine;
                    let credential = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(json));
                    builder = builder.credential(&credential);
                    None
                }
            }
        }
        (None, Some(token)) => {
            builder = builder.token(token.to_owned());
            Some(GcsIdentity::AccessToken(zeroize::Zeroizing::new(token.to_owned())))
        }
        (None, None) => {
            return Err(StorageError::MissingField { binding: input.binding.to_owned(), field: CREDENTIALS_JSON });
        }
    };
    let credential_check = match &identity {
        Some(GcsIdentity::ServiceAccount(tokens)) => Some(Box::new(tokens.clone()) as Box<dyn CredentialCheck>),
        _ => None,
    };
    let server_side_copy = match identity {
        Some(identity) => Some(ServerSideAccount::Gcs(
            GcsAccount::new(gcs.endpoint.as_deref(), &gcs.bucket, identity)
                .map_err(|error| invalid(error.to_string()))?,
        )),
        None => None,
    };
    if let Some(endpoint) = &gcs.endpoint {
        builder = builder.endpoint(endpoint);
    }
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { server_side_copy, credential_check, ..Backend::new(operator, CAPABILITIES) })
}
