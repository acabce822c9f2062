//! Azure `Copy Blob` between two containers of one storage account: the service copies, the
//! runner only asks and waits. OpenDAL copies only within one container, so the request is
//! signed here with the shared-key signer OpenDAL's Azure service uses.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqsign_azure_storage::{Credential, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

use super::server_side_copy::{CopiedOnServer, CopyError, send_signed};

/// The storage API version the requests speak.
const API_VERSION: &str = "2023-11-03";
/// How long a copy the service reports as pending is waited for.
const PENDING_LIMIT: Duration = Duration::from_secs(30 * 60);

/// A blob name in a URL: every byte but unreserved characters and `/` is escaped.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// One container and the account key that reaches it.
pub struct AzblobAccount {
    endpoint: String,
    account: String,
    container: String,
    /// A digest of the key, so two accounts compare without keeping the key twice.
    key_fingerprint: [u8; 32],
    signer: Signer<Credential>,
    client: reqwest::Client,
}

impl std::fmt::Debug for AzblobAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzblobAccount")
            .field("account", &self.account)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl AzblobAccount {
    /// An account for `container` at `endpoint`, signed with the account key.
    pub fn new(endpoint: &str, account: &str, container: &str, account_key: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            account: account.to_owned(),
            container: container.to_owned(),
            key_fingerprint: *blake3::hash(account_key.as_bytes()).as_bytes(),
            signer: Signer::new(
                Context::new(),
                StaticCredentialProvider::new_shared_key(account, account_key),
                RequestSigner::new(),
            ),
            client: reqwest::Client::builder().timeout(Duration::from_secs(5 * 60)).build()?,
        })
    }

    /// Whether this account can copy from `source` on the server: the same endpoint,
    /// account and key (a copy within one account needs no other authorization).
    pub fn reaches(&self, source: &AzblobAccount) -> bool {
        self.endpoint.eq_ignore_ascii_case(&source.endpoint)
            && self.account == source.account
            && self.key_fingerprint == source.key_fingerprint
    }

    fn blob_url(&self, name: &str) -> String {
        format!("{}/{}/{}", self.endpoint, self.container, utf8_percent_encode(name, NAME))
    }

    async fn send(&self, request: http::Request<bytes::Bytes>) -> Result<reqwest::Response, CopyError> {
        send_signed(&self.signer, &self.client, request).await
    }

    fn request(&self, method: http::Method, name: &str) -> http::request::Builder {
        let now = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        http::Request::builder()
            .method(method)
            .uri(self.blob_url(name))
            .header("x-ms-version", API_VERSION)
            .header("x-ms-date", now)
    }

    /// Copies `source_name` of `source`'s container to `name` in this one and waits until
    /// the service has finished; the result carries the new blob's `Content-MD5` in hex.
    pub async fn copy_from(
        &self,
        source: &AzblobAccount,
        source_name: &str,
        name: &str,
    ) -> Result<CopiedOnServer, CopyError> {
        let request = self
            .request(http::Method::PUT, name)
            .header("x-ms-copy-source", source.blob_url(source_name))
            .header("content-length", "0")
            .body(bytes::Bytes::new())
            .map_err(|error| CopyError::Failed(error.to_string()))?;
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            let code = header(&response, "x-ms-error-code").unwrap_or_else(|| status.to_string());
            return Err(match status.as_u16() {
                400 | 403 | 409 => CopyError::Refused(code),
                _ => CopyError::Failed(code),
            });
        }
        let started = tokio::time::Instant::now();
        loop {
            let request = self
                .request(http::Method::HEAD, name)
                .body(bytes::Bytes::new())
                .map_err(|error| CopyError::Failed(error.to_string()))?;
            let properties = self.send(request).await?;
            if !properties.status().is_success() {
                return Err(CopyError::Failed(format!("reading the copy's properties: {}", properties.status())));
            }
            match header(&properties, "x-ms-copy-status").as_deref() {
                Some("success") | None => {
                    let md5 = header(&properties, "content-md5")
                        .and_then(|md5| base64::engine::general_purpose::STANDARD.decode(md5).ok())
                        .map(hex::encode);
                    return Ok(CopiedOnServer { checksum: md5 });
                }
                Some("pending") if started.elapsed() < PENDING_LIMIT => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some(other) => {
                    let reason = header(&properties, "x-ms-copy-status-description").unwrap_or_default();
                    return Err(CopyError::Failed(format!("the copy ended {other}: {reason}")));
                }
            }
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn only_one_account_with_its_key_copies_on_the_server() {
        let here = AzblobAccount::new("http://127.0.0.1:10000/dev", "dev", "a", KEY).unwrap();
        assert!(here.reaches(&AzblobAccount::new("http://127.0.0.1:10000/dev/", "dev", "b", KEY).unwrap()));
        assert!(!here.reaches(&AzblobAccount::new("http://127.0.0.1:10000/dev", "other", "b", KEY).unwrap()));
        assert!(!here.reaches(&AzblobAccount::new("http://127.0.0.1:10000/dev", "dev", "b", "b3RoZXI=").unwrap()));
        assert_eq!(here.blob_url("a b/%+#?.txt"), "http://127.0.0.1:10000/dev/a/a%20b/%25%2B%23%3F.txt");
    }
}
