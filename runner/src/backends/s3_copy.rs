//! S3 `CopyObject` between two buckets of one endpoint and account: the bytes never pass
//! through the runner. OpenDAL copies only within one bucket, so this request is signed
//! here, with the same SigV4 signer OpenDAL's S3 service uses.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqsign_aws_v4::{Credential, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

use super::server_side_copy::{CopiedOnServer, CopyError, send_signed};

/// The largest object one `CopyObject` takes; larger ones are streamed.
pub const MAX_COPY_BYTES: u64 = 5 << 30;

/// One S3 bucket and the credential that reaches it.
pub struct S3Account {
    /// `scheme://host[:port]` of the service (AWS's regional endpoint when none is set).
    pub(super) endpoint: String,
    region: String,
    path_style: bool,
    pub(super) bucket: String,
    access_key_id: String,
    pub(super) signer: Signer<Credential>,
    pub(super) client: reqwest::Client,
}

impl std::fmt::Debug for S3Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The access key ID names the account; the signer holds the secret and stays out.
        f.debug_struct("S3Account")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// S3's rule for a key in a path: every byte but unreserved characters and `/` is escaped.
pub(super) const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

impl S3Account {
    /// An account for `bucket` at `endpoint` (`None`: AWS in `region`).
    pub fn new(
        endpoint: Option<&str>,
        region: &str,
        path_style: bool,
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> Result<Self, reqwest::Error> {
        let mut provider = StaticCredentialProvider::new(access_key_id, secret_access_key);
        if let Some(token) = session_token {
            provider = provider.with_session_token(token);
        }
        let endpoint = endpoint.map_or_else(
            || format!("https://s3.{region}.amazonaws.com"),
            |endpoint| endpoint.trim_end_matches('/').to_owned(),
        );
        Ok(Self {
            endpoint,
            region: region.to_owned(),
            path_style,
            bucket: bucket.to_owned(),
            access_key_id: access_key_id.to_owned(),
            signer: Signer::new(Context::new(), provider, RequestSigner::new("s3", region)),
            client: reqwest::Client::builder().timeout(Duration::from_secs(15 * 60)).build()?,
        })
    }

    /// Whether this account can copy from `source` on the server: the same service, region
    /// and credential (another credential might not read the source bucket).
    pub fn reaches(&self, source: &S3Account) -> bool {
        self.endpoint.eq_ignore_ascii_case(&source.endpoint)
            && self.region == source.region
            && self.access_key_id == source.access_key_id
    }

    pub(super) fn object_url(&self, key: &str) -> String {
        let key = utf8_percent_encode(key, KEY);
        if self.path_style {
            return format!("{}/{}/{key}", self.endpoint, self.bucket);
        }
        match self.endpoint.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}/{key}", self.bucket),
            None => format!("{}/{}/{key}", self.endpoint, self.bucket),
        }
    }

    /// Copies `source_key` of `source`'s bucket to `key` in this one.
    pub async fn copy_from(
        &self,
        source: &S3Account,
        source_key: &str,
        key: &str,
    ) -> Result<CopiedOnServer, CopyError> {
        let headers =
            [("x-amz-copy-source", source.copy_source(source_key)), ("x-amz-metadata-directive", "COPY".to_owned())];
        let answer = self.send(http::Method::PUT, self.object_url(key), &headers, bytes::Bytes::new()).await?;
        Ok(CopiedOnServer { checksum: etag(&answer) })
    }

    /// `x-amz-copy-source` for `key` in this bucket.
    pub(super) fn copy_source(&self, key: &str) -> String {
        format!("/{}/{}", self.bucket, utf8_percent_encode(key, KEY))
    }

    /// Sends a signed request (the body's SHA-256 signed with it) and returns the answer's
    /// text. S3 may answer 200 and still fail, the error in the body: that is a failure too,
    /// a refusal (403, 400, 501) where streaming instead can still work.
    pub(super) async fn send(
        &self,
        method: http::Method,
        url: String,
        headers: &[(&str, String)],
        body: bytes::Bytes,
    ) -> Result<String, CopyError> {
        use sha2::Digest;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header("x-amz-content-sha256", hex::encode(sha2::Sha256::digest(&body)));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).map_err(|error| CopyError::Failed(error.to_string()))?;
        let response = send_signed(&self.signer, &self.client, request).await?;
        let status = response.status();
        let text = response.text().await.map_err(|error| CopyError::Failed(error.without_url().to_string()))?;
        if status.is_success() && !text.contains("<Error>") {
            return Ok(text);
        }
        let code = element(&text, "Code").unwrap_or_else(|| status.to_string());
        match status.as_u16() {
            403 | 400 | 501 => Err(CopyError::Refused(code)),
            _ => Err(CopyError::Failed(code)),
        }
    }
}

/// The ETag an answer names, unquoted and in lower case (the form of `ObjectInfo::checksum`).
pub(super) fn etag(answer: &str) -> Option<String> {
    element(answer, "ETag").map(|etag| etag.trim_matches('"').to_ascii_lowercase())
}

/// The text of the first `<name>` element, with the XML entities S3 uses decoded.
pub(super) fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].replace("&quot;", "\"").replace("&#34;", "\"").replace("&amp;", "&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(endpoint: Option<&str>, path_style: bool, key: &str) -> S3Account {
        S3Account::new(endpoint, "eu-west-1", path_style, "archive", key, "secret", None).unwrap()
    }

    #[test]
    fn urls_follow_the_addressing_style_and_escape_keys() {
        let path = account(Some("http://127.0.0.1:8333/"), true, "k");
        assert_eq!(path.object_url("a b/%+#?.txt"), "http://127.0.0.1:8333/archive/a%20b/%25%2B%23%3F.txt");
        let virtual_host = account(None, false, "k");
        assert_eq!(virtual_host.object_url("x/y"), "https://archive.s3.eu-west-1.amazonaws.com/x/y");
    }

    #[test]
    fn only_the_same_service_region_and_credential_copy_on_the_server() {
        let here = account(Some("http://minio:9000"), true, "AKIA1");
        assert!(here.reaches(&account(Some("http://MINIO:9000/"), true, "AKIA1")));
        assert!(!here.reaches(&account(Some("http://minio:9000"), true, "AKIA2")));
        assert!(!here.reaches(&account(Some("http://other:9000"), true, "AKIA1")));
    }

    #[test]
    fn the_copy_result_and_errors_are_read_from_the_body() {
        let body = "<CopyObjectResult><LastModified>x</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>";
        assert_eq!(element(body, "ETag").unwrap().trim_matches('"'), "9b2cf535f27731c974343645a3985328");
        assert_eq!(element("<Error><Code>AccessDenied</Code></Error>", "Code").unwrap(), "AccessDenied");
        assert_eq!(element("<Error></Error>", "Code"), None);
    }
}
