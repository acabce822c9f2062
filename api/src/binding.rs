//! `CredentialBinding`: one tenant's access to one storage location.

// kube-derive expands every `printcolumn(...)` into sibling attributes that clippy mistakes
// for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Where a storage location is and how to reach it; the credentials themselves stay in Vault.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "CredentialBinding",
    namespaced,
    shortname = "cb",
    category = "ferry",
    status = "CredentialBindingStatus",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = crate::rules::provider_block("s3"),
    validation = crate::rules::provider_block("azblob"),
    validation = crate::rules::provider_block("gcs"),
    validation = crate::rules::provider_block("webdav"),
    validation = crate::rules::provider_block("sftp"),
    validation = crate::rules::provider_block("fs"),
    validation = crate::rules::provider_block("onedrive"),
    validation = crate::rules::provider_block("gdrive"),
    validation = crate::rules::provider_block("dropbox"),
    validation = crate::rules::vault_unless_filesystem()
)]
pub struct CredentialBindingSpec {
    /// The kind of storage; exactly the matching settings block must be present.
    pub provider: Provider,
    /// S3 and S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azblob: Option<AzblobSettings>,
    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSettings>,
    /// A WebDAV server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webdav: Option<WebdavSettings>,
    /// An SFTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<SftpSettings>,
    /// A local filesystem or a PersistentVolumeClaim mounted into the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsSettings>,
    /// Microsoft OneDrive or SharePoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onedrive: Option<DriveSettings>,
    /// Google Drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gdrive: Option<DriveSettings>,
    /// Dropbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropbox: Option<DriveSettings>,
    /// The Vault secret holding this location's credentials (every provider except fs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSecretReference>,
    /// The addresses runners using this binding may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub egress: Vec<EgressRule>,
}

/// The storage providers Ferry can read from and write to.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// S3 or an S3-compatible store.
    S3,
    /// Azure Blob Storage.
    Azblob,
    /// Google Cloud Storage.
    Gcs,
    /// WebDAV.
    Webdav,
    /// SFTP.
    Sftp,
    /// A filesystem path (or a PersistentVolumeClaim in a cluster).
    Fs,
    /// OneDrive / SharePoint.
    Onedrive,
    /// Google Drive.
    Gdrive,
    /// Dropbox.
    Dropbox,
}

impl Provider {
    /// The name used in manifests (`s3`, `azblob`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Azblob => "azblob",
            Self::Gcs => "gcs",
            Self::Webdav => "webdav",
            Self::Sftp => "sftp",
            Self::Fs => "fs",
            Self::Onedrive => "onedrive",
            Self::Gdrive => "gdrive",
            Self::Dropbox => "dropbox",
        }
    }

    /// The fields a Vault secret must hold for this provider: every group lists
    /// alternatives, of which at least one must be present.
    pub fn required_secret_fields(self) -> &'static [&'static [&'static str]] {
        use secret_field::*;
        match self {
            Self::S3 => &[&[ACCESS_KEY_ID], &[SECRET_ACCESS_KEY]],
            Self::Azblob => &[&[ACCOUNT_KEY, SAS_TOKEN]],
            Self::Gcs => &[&[CREDENTIALS_JSON, ACCESS_TOKEN]],
            Self::Webdav => &[&[USERNAME, BEARER_TOKEN]],
            Self::Sftp => &[&[PASSWORD, PRIVATE_KEY]],
            Self::Fs => &[],
            Self::Onedrive | Self::Gdrive | Self::Dropbox => &[&[CLIENT_ID], &[CLIENT_SECRET], &[REFRESH_TOKEN]],
        }
    }

    /// Whether the provider may hand out a new refresh token with each access token, which
    /// must then be stored for the next run (Microsoft's identity platform does).
    pub fn rotates_refresh_tokens(self) -> bool {
        matches!(self, Self::Onedrive)
    }

    /// Every provider, in the order the API lists them.
    pub const ALL: [Self; 9] = [
        Self::S3,
        Self::Azblob,
        Self::Gcs,
        Self::Webdav,
        Self::Sftp,
        Self::Fs,
        Self::Onedrive,
        Self::Gdrive,
        Self::Dropbox,
    ];
}

/// The names of the fields a binding's Vault secret may hold, for every provider.
pub mod secret_field {
    /// S3: the access key ID.
    pub const ACCESS_KEY_ID: &str = "accessKeyId";
    /// S3: the secret access key.
    pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
    /// S3: a session token for temporary credentials (optional).
    pub const SESSION_TOKEN: &str = "sessionToken";
    /// Azure Blob: the storage account key.
    pub const ACCOUNT_KEY: &str = "accountKey";
    /// Azure Blob: a shared access signature, instead of the account key.
    pub const SAS_TOKEN: &str = "sasToken";
    /// Google Cloud Storage: the service account's JSON key.
    pub const CREDENTIALS_JSON: &str = "credentialsJson";
    /// Google Cloud Storage: an OAuth 2.0 access token (from Vault's GCP secrets engine, say),
    /// instead of a JSON key.
    pub const ACCESS_TOKEN: &str = "accessToken";
    /// WebDAV (with `password`) and SFTP: the user name.
    pub const USERNAME: &str = "username";
    /// WebDAV and SFTP: the password.
    pub const PASSWORD: &str = "password";
    /// WebDAV: a bearer token, instead of a user name and password.
    pub const BEARER_TOKEN: &str = "bearerToken";
    /// SFTP: a private key in OpenSSH format.
    pub const PRIVATE_KEY: &str = "privateKey";
    /// SFTP: the passphrase of an encrypted private key (optional).
    pub const PRIVATE_KEY_PASSPHRASE: &str = "privateKeyPassphrase";
    /// OAuth drives: the application's client ID.
    pub const CLIENT_ID: &str = "clientId";
    /// OAuth drives: the application's client secret.
    pub const CLIENT_SECRET: &str = "clientSecret";
    /// OAuth drives: the user's refresh token.
    pub const REFRESH_TOKEN: &str = "refreshToken";
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// S3 or S3-compatible storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Settings {
    /// The service URL; absent means AWS for `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub endpoint: Option<String>,
    /// The region to sign requests for.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// The bucket.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    #[serde(default)]
    pub force_path_style: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// Azure Blob Storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzblobSettings {
    /// The blob service URL; absent means `https://<account>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub endpoint: Option<String>,
    /// The container.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub container: String,
    /// The storage account name.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9]+$"))]
    pub account: String,
}

/// Google Cloud Storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsSettings {
    /// The JSON API URL; absent means Google's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub endpoint: Option<String>,
    /// The bucket.
    #[schemars(length(min = 3, max = 222), regex(pattern = r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$"))]
    pub bucket: String,
}

/// A WebDAV server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebdavSettings {
    /// The server URL, including any base path.
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub endpoint: String,
}

/// An SFTP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SftpSettings {
    /// The host name or address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The SSH port.
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The user to log in as.
    #[schemars(length(min = 1, max = 64))]
    pub user: String,
    /// The server's host keys in `known_hosts` format; connections to any other key are refused.
    #[schemars(length(min = 1, max = 16384))]
    pub known_hosts: String,
    /// The directory job paths are relative to; absent means the directory the server logs
    /// the user into (an absolute path, or one relative to that directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub root: Option<String>,
}

fn default_ssh_port() -> u16 {
    22
}

/// A local filesystem, or a PersistentVolumeClaim mounted at `root` in a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FsSettings {
    /// The directory that paths in jobs are relative to: absolute, or `./relative` to the
    /// manifest's directory when run locally with `ferry-runner run`.
    #[schemars(length(min = 1, max = 1024), regex(pattern = crate::names::FILESYSTEM_ROOT))]
    #[x_kube(validation = crate::rules::plain_filesystem_root(), validation = crate::rules::filesystem_root_not_reserved())]
    pub root: String,
    /// In a cluster: the PersistentVolumeClaim (in the job's namespace) to mount at `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = crate::names::DNS_SUBDOMAIN))]
    pub claim_name: Option<String>,
}

/// Directories an absolute `fs` root may not be, lie inside or lie above: the runner's own
/// files, `/proc` and `/dev`, and the plan, token (both under `/etc`) and spool mounts. A
/// volume mounted there would replace what the runner trusts.
pub const RUNNER_RESERVED_TREES: [&str; 10] =
    ["/bin", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/spool", "/sys", "/usr"];

/// Directories an absolute `fs` root may not be or lie above, though it may lie inside them:
/// `/tmp` is the runner's scratch volume in a pod, and local runs keep data under it.
pub const RUNNER_RESERVED_MOUNTS: [&str; 1] = ["/tmp"];

/// Whether an absolute `root` would be mounted over one of `trees` (equal, inside or above)
/// or `mounts` (equal or above). `root` is compared as a directory, so `/etc/` is `/etc` and
/// `/etcetera` is not `/etc`. This is the Rust twin of [`crate::rules::filesystem_root_not_reserved`].
pub fn mounts_over(root: &str, trees: &[&str], mounts: &[&str]) -> bool {
    if !root.starts_with('/') {
        return false;
    }
    let directory = |path: &str| if path.ends_with('/') { path.to_owned() } else { format!("{path}/") };
    let root = directory(root);
    trees.iter().any(|tree| {
        let tree = directory(tree);
        root.starts_with(&tree) || tree.starts_with(&root)
    }) || mounts.iter().any(|mount| directory(mount).starts_with(&root))
}

/// Whether an absolute `root` is written plainly: no `.` or `..` segment and no `//`, so
/// comparing it as text is comparing the directory. The Rust twin of
/// [`crate::rules::plain_filesystem_root`].
pub fn is_plain_root(root: &str) -> bool {
    !root.starts_with('/')
        || !(root.contains("//")
            || root.contains("/./")
            || root.ends_with("/.")
            || root.contains("/../")
            || root.ends_with("/.."))
}

/// OneDrive/SharePoint, Google Drive or Dropbox, reached with an OAuth refresh token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriveSettings {
    /// The drive to use: a OneDrive/SharePoint drive id, a Google shared drive id, or a
    /// Dropbox team space's namespace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub drive_id: Option<String>,
    /// The folder inside the drive that job paths are relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub root: Option<String>,
    /// Overrides the provider's OAuth token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub token_endpoint: Option<String>,
    /// Overrides the provider's API root (a national cloud, such as Microsoft Graph for US
    /// Government at `https://graph.microsoft.us/v1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = crate::names::HTTP_URL))]
    pub api_endpoint: Option<String>,
}

/// A KV v2 secret in Vault (or OpenBao) whose fields are the provider's credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultSecretReference {
    /// The KV v2 mount.
    #[serde(default = "default_kv_mount")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::names::VAULT_PATH))]
    pub mount: String,
    /// The secret's path inside the mount.
    #[schemars(length(min = 1, max = 512), regex(pattern = crate::names::VAULT_PATH))]
    pub path: String,
    /// When set, the secret's fields are Transit ciphertext under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub transit_key: Option<String>,
    /// The Transit mount that holds `transitKey`.
    #[serde(default = "default_transit_mount")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::names::VAULT_PATH))]
    pub transit_mount: String,
}

impl VaultSecretReference {
    /// The path of the Vault request whose wrapped response carries this secret: the KV v2
    /// read (`<mount>/data/<path>`), or the Transit decryption (`<transitMount>/decrypt/<key>`).
    /// The operator wraps exactly this request and the runner accepts only tokens created by it.
    pub fn creation_path(&self) -> String {
        match &self.transit_key {
            None => format!("{}/data/{}", self.mount, self.path),
            Some(key) => format!("{}/decrypt/{key}", self.transit_mount),
        }
    }

    /// The KV v2 read path (`<mount>/data/<path>`), which holds the values or their ciphertext.
    pub fn kv_data_path(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }
}

fn default_kv_mount() -> String {
    "secret".to_owned()
}

fn default_transit_mount() -> String {
    "transit".to_owned()
}

/// One destination runners may reach: an address block and its ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// An IPv4 or IPv6 CIDR such as `52.218.0.0/17`.
    #[schemars(length(min = 1, max = 64), regex(pattern = crate::names::CIDR))]
    pub cidr: String,
    /// TCP ports on those addresses.
    #[schemars(length(min = 1, max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
}

/// What the operator last learned about the binding's secret (never a value).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialBindingStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The KV version last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<u64>,
    /// Ready (with reasons such as SecretValid, SecretNotFound, MissingField, VaultUnreachable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(transit_key: Option<&str>) -> VaultSecretReference {
        VaultSecretReference {
            mount: "kv".into(),
            path: "tenants/a/s3".into(),
            transit_key: transit_key.map(str::to_owned),
            transit_mount: "transit-prod".into(),
        }
    }

    #[test]
    fn creation_path_is_the_read_that_gets_wrapped() {
        assert_eq!(reference(None).creation_path(), "kv/data/tenants/a/s3");
        assert_eq!(reference(Some("tenant-a")).creation_path(), "transit-prod/decrypt/tenant-a");
        assert_eq!(reference(Some("tenant-a")).kv_data_path(), "kv/data/tenants/a/s3");
    }
}
