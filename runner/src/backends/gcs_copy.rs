//! GCS `rewrite` between two buckets reached as one identity (an access token, or a service
//! account's key): the service copies, in as many calls as it asks for. OpenDAL copies only
//! within one bucket.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use zeroize::Zeroizing;

use super::gcs_token::ServiceAccountTokens;
use super::server_side_copy::{CopiedOnServer, CopyError};

/// An object name is one path segment of the JSON API: `/` is escaped too.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Who a binding acts as.
pub enum GcsIdentity {
    /// A fixed OAuth access token.
    AccessToken(Zeroizing<String>),
    /// A service account, whose tokens are exchanged as needed.
    ServiceAccount(ServiceAccountTokens),
}

impl GcsIdentity {
    /// Whether both are one identity, so that one reads what the other reads.
    fn same_as(&self, other: &GcsIdentity) -> bool {
        match (self, other) {
            (Self::AccessToken(here), Self::AccessToken(there)) => **here == **there,
            (Self::ServiceAccount(here), Self::ServiceAccount(there)) => here.same_account(there),
            _ => false,
        }
    }

    async fn bearer(&self) -> Result<Zeroizing<String>, CopyError> {
        match self {
            Self::AccessToken(token) => Ok(token.clone()),
            Self::ServiceAccount(tokens) => {
                tokens.access_token().await.map(|(token, _)| token).map_err(CopyError::Failed)
            }
        }
    }
}

/// One bucket and the identity that reaches it.
pub struct GcsAccount {
    /// The JSON API's root (`https://storage.googleapis.com` unless the binding says).
    endpoint: String,
    bucket: String,
    identity: GcsIdentity,
    client: reqwest::Client,
}

impl std::fmt::Debug for GcsAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsAccount")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
    #[serde(default)]
    resource: Option<RewrittenObject>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewrittenObject {
    #[serde(default)]
    md5_hash: Option<String>,
}

impl GcsAccount {
    /// An account for `bucket` at `endpoint` (`None`: Google's), acting as `identity`.
    pub fn new(endpoint: Option<&str>, bucket: &str, identity: GcsIdentity) -> Result<Self, reqwest::Error> {
        Ok(Self {
            endpoint: endpoint.unwrap_or("https://storage.googleapis.com").trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            identity,
            client: reqwest::Client::builder().timeout(Duration::from_secs(5 * 60)).build()?,
        })
    }

    /// Whether this account can copy from `source` on the server: the same service and
    /// identity (another may not read the source bucket).
    pub fn reaches(&self, source: &GcsAccount) -> bool {
        self.endpoint.eq_ignore_ascii_case(&source.endpoint) && self.identity.same_as(&source.identity)
    }

    fn rewrite_url(&self, source: &GcsAccount, source_name: &str, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}/rewriteTo/b/{}/o/{}",
            self.endpoint,
            source.bucket,
            utf8_percent_encode(source_name, NAME),
            self.bucket,
            utf8_percent_encode(name, NAME)
        )
    }

    /// Rewrites `source_name` of `source`'s bucket to `name` in this one, calling again
    /// with the service's token until it is done; the result carries the new object's MD5.
    pub async fn copy_from(
        &self,
        source: &GcsAccount,
        source_name: &str,
        name: &str,
    ) -> Result<CopiedOnServer, CopyError> {
        let url = self.rewrite_url(source, source_name, name);
        let mut rewrite_token: Option<String> = None;
        loop {
            let call = match &rewrite_token {
                Some(token) => format!("{url}?rewriteToken={}", utf8_percent_encode(token, NAME)),
                None => url.clone(),
            };
            // Asked for each call: a long rewrite may outlive one token.
            let token = self.identity.bearer().await?;
            let request = self.client.post(call).bearer_auth(token.as_str()).header("content-length", "0");
            let response = request.send().await.map_err(|error| CopyError::Failed(error.without_url().to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(match status.as_u16() {
                    400 | 403 | 501 => CopyError::Refused(status.to_string()),
                    _ => CopyError::Failed(status.to_string()),
                });
            }
            let answer: RewriteResponse =
                response.json().await.map_err(|error| CopyError::Failed(error.without_url().to_string()))?;
            if answer.done {
                let md5 = answer
                    .resource
                    .and_then(|object| object.md5_hash)
                    .and_then(|md5| base64::engine::general_purpose::STANDARD.decode(md5).ok())
                    .map(hex::encode);
                return Ok(CopiedOnServer { checksum: md5 });
            }
            rewrite_token = Some(answer.rewrite_token.ok_or_else(|| {
                CopyError::Failed("the service asked for another call but gave no rewrite token".to_owned())
            })?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_service_and_token_copy_on_the_server_and_names_are_one_segment() {
        let token = |value: &str| GcsIdentity::AccessToken(Zeroizing::new(value.to_owned()));
        let here = GcsAccount::new(Some("http://127.0.0.1:4443/"), "b", token("token-1")).unwrap();
        let there = GcsAccount::new(Some("http://127.0.0.1:4443"), "a", token("token-1")).unwrap();
        assert!(here.reaches(&there));
        assert!(!here.reaches(&GcsAccount::new(Some("http://127.0.0.1:4443"), "a", token("token-2")).unwrap()));
        assert!(!here.reaches(&GcsAccount::new(None, "a", token("token-1")).unwrap()));
        let key = r#"{"type": "service_account", "client_email": "a@b", "private_key": "k"}"#;
        let account = || GcsIdentity::ServiceAccount(ServiceAccountTokens::from_key_file(key).unwrap().unwrap());
        let keyed = GcsAccount::new(Some("http://127.0.0.1:4443"), "a", account()).unwrap();
        assert!(keyed.reaches(&GcsAccount::new(Some("http://127.0.0.1:4443"), "b", account()).unwrap()));
        assert!(!keyed.reaches(&there) && !there.reaches(&keyed), "a key and a token are two identities");
        assert_eq!(
            here.rewrite_url(&there, "dir/a b.txt", "out/%.txt"),
            "http://127.0.0.1:4443/storage/v1/b/a/o/dir%2Fa%20b.txt/rewriteTo/b/b/o/out%2F%25.txt"
        );
    }
}
