//! The Microsoft Graph requests a drive needs: items by path, children page by page,
//! downloads, small uploads and upload sessions, deletes, each sent through [`Authorized`].

use opendal::Error;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::super::authorized::Authorized;

/// A path inside the drive in a URL: segments escaped, `/` kept.
const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// What Graph says about a file or folder.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveItem {
    /// The name.
    pub name: String,
    /// Bytes (a folder's is the sum of its contents).
    #[serde(default)]
    pub size: u64,
    /// When it was last changed on the drive, RFC 3339.
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    /// The times a client set (the file's own modification time, when an uploader kept it).
    #[serde(default)]
    pub file_system_info: Option<FileSystemInfo>,
    /// Present for folders.
    #[serde(default)]
    pub folder: Option<serde_json::Value>,
    /// Present for files: their hashes.
    #[serde(default)]
    pub file: Option<FileFacet>,
}

/// The times a client may set on an item.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSystemInfo {
    /// The file's modification time, RFC 3339.
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
}

/// A file's facet.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FileFacet {
    /// The hashes the service computed.
    #[serde(default)]
    pub hashes: Hashes,
}

/// The hashes of a file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hashes {
    /// QuickXorHash, base64 (OneDrive for Business and SharePoint, and personal OneDrive).
    #[serde(default)]
    pub quick_xor_hash: Option<String>,
}

impl DriveItem {
    /// The file's own modification time where a client set one, else the drive's.
    pub fn modified(&self) -> Option<&str> {
        self.file_system_info
            .as_ref()
            .and_then(|info| info.last_modified_date_time.as_deref())
            .or(self.last_modified_date_time.as_deref())
    }

    /// The QuickXorHash, hex, when the service reported one.
    pub fn quickxor(&self) -> Option<String> {
        use base64::Engine;
        let encoded = self.file.as_ref()?.hashes.quick_xor_hash.as_deref()?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        (decoded.len() == 20).then(|| hex::encode(decoded))
    }
}

#[derive(serde::Deserialize)]
struct Children {
    value: Vec<DriveItem>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    upload_url: String,
}

/// One drive, with its paths under `root`.
pub struct Graph {
    /// `https://graph.microsoft.com/v1.0` unless the binding says.
    api: String,
    /// `drives/<id>` or `me/drive`.
    drive: String,
    /// `""` or a folder path ending in `/`.
    root: String,
    http: Authorized,
}

/// Graph's name for a failure (`error.code`).
async fn failure(http: &Authorized, doing: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    http.failure(doing, status, &code)
}

impl Graph {
    /// A client for `drive_id` (`None`: the signed-in user's drive) with paths under `root`.
    pub fn new(api: Option<&str>, drive_id: Option<&str>, root: Option<&str>, http: Authorized) -> Self {
        let root = root.map(|root| root.trim_matches('/')).filter(|root| !root.is_empty());
        Self {
            api: api.unwrap_or("https://graph.microsoft.com/v1.0").trim_end_matches('/').to_owned(),
            drive: drive_id
                .map_or_else(|| "me/drive".to_owned(), |id| format!("drives/{}", utf8_percent_encode(id, PATH))),
            root: root.map(|root| format!("{root}/")).unwrap_or_default(),
            http,
        }
    }

    /// The drive path of a service path (relative, folders ending in `/`).
    fn drive_path(&self, path: &str) -> String {
        format!("{}{}", self.root, path.trim_start_matches('/')).trim_end_matches('/').to_owned()
    }

    /// The item URL of a service path, with `suffix` (`/children`, `/content`...) after it.
    fn item_url(&self, path: &str, suffix: &str) -> String {
        match self.drive_path(path).as_str() {
            "" => format!("{}/{}/root{suffix}", self.api, self.drive),
            path if suffix.is_empty() => {
                format!("{}/{}/root:/{}", self.api, self.drive, utf8_percent_encode(path, PATH))
            }
            path => format!("{}/{}/root:/{}:{suffix}", self.api, self.drive, utf8_percent_encode(path, PATH)),
        }
    }

    /// The item at `path`, or `None`.
    pub async fn item(&self, path: &str) -> Result<Option<DriveItem>, Error> {
        let url = self.item_url(path, "");
        let response = self.http.send("reading an item", |http, token| http.get(&url).bearer_auth(token)).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            _ if response.status().is_success() => {
                response.json().await.map(Some).map_err(|error| self.http.request_error("reading an item", error))
            }
            _ => Err(failure(&self.http, "reading an item", response).await),
        }
    }

    /// Every child of the folder at `path`, page by page; a folder that is not there is empty.
    pub async fn children(&self, path: &str) -> Result<Vec<DriveItem>, Error> {
        let mut items = Vec::new();
        let mut next = Some(format!("{}?$top=1000", self.item_url(path, "/children")));
        while let Some(url) = next.take() {
            let response = self.http.send("listing a folder", |http, token| http.get(&url).bearer_auth(token)).await?;
            if response.status().as_u16() == 404 && items.is_empty() {
                return Ok(items);
            }
            if !response.status().is_success() {
                return Err(failure(&self.http, "listing a folder", response).await);
            }
            let page: Children =
                response.json().await.map_err(|error| self.http.request_error("listing a folder", error))?;
            items.extend(page.value);
            next = page.next_link;
        }
        Ok(items)
    }

    /// The content of the file at `path`, from `offset`, `length` bytes (or to its end).
    pub async fn download(&self, path: &str, offset: u64, length: Option<u64>) -> Result<reqwest::Response, Error> {
        let url = self.item_url(path, "/content");
        let response = self
            .http
            .send("downloading", |http, token| {
                super::super::authorized::with_range(http.get(&url).bearer_auth(token), offset, length)
            })
            .await?;
        if !response.status().is_success() {
            return Err(failure(&self.http, "downloading", response).await);
        }
        Ok(response)
    }

    /// Uploads a small file in one request (Graph takes up to 4 MiB this way), then sets its
    /// modification time (RFC 3339) if one is given: a one-request upload cannot carry it.
    pub async fn upload_small(
        &self,
        path: &str,
        content: bytes::Bytes,
        modified: Option<&str>,
    ) -> Result<DriveItem, Error> {
        let url = self.item_url(path, "/content");
        let response =
            self.http.send("uploading", |http, token| http.put(&url).bearer_auth(token).body(content.clone())).await?;
        if !response.status().is_success() {
            return Err(failure(&self.http, "uploading", response).await);
        }
        let uploaded: DriveItem = response.json().await.map_err(|error| self.http.request_error("uploading", error))?;
        let Some(modified) = modified else { return Ok(uploaded) };
        let url = self.item_url(path, "");
        let body = serde_json::json!({"fileSystemInfo": {"lastModifiedDateTime": modified}});
        let response = self
            .http
            .send("setting the modification time", |http, token| http.patch(&url).bearer_auth(token).json(&body))
            .await?;
        if !response.status().is_success() {
            return Err(failure(&self.http, "setting the modification time", response).await);
        }
        response.json().await.map_err(|error| self.http.request_error("setting the modification time", error))
    }

    /// Starts an upload session replacing whatever is at `path`, with the file's
    /// modification time (RFC 3339) if one is given; returns its upload URL.
    pub async fn upload_session(&self, path: &str, modified: Option<&str>) -> Result<String, Error> {
        let url = self.item_url(path, "/createUploadSession");
        let mut item = serde_json::json!({"@microsoft.graph.conflictBehavior": "replace"});
        if let Some(modified) = modified {
            item["fileSystemInfo"] = serde_json::json!({"lastModifiedDateTime": modified});
        }
        let body = serde_json::json!({"item": item});
        let response = self
            .http
            .send("starting an upload session", |http, token| http.post(&url).bearer_auth(token).json(&body))
            .await?;
        if !response.status().is_success() {
            return Err(failure(&self.http, "starting an upload session", response).await);
        }
        let session: Session =
            response.json().await.map_err(|error| self.http.request_error("starting an upload session", error))?;
        Ok(session.upload_url)
    }

    /// Sends bytes `start..start + fragment.len()` of `total` to an upload session (its URL
    /// carries its own authorization); the last fragment's answer is the new item.
    pub async fn upload_fragment(
        &self,
        upload_url: &str,
        fragment: bytes::Bytes,
        start: u64,
        total: u64,
    ) -> Result<Option<DriveItem>, Error> {
        let end = start + fragment.len() as u64 - 1;
        let response = self
            .http
            .send_presigned("uploading a fragment", |http| {
                http.put(upload_url)
                    .header("content-range", format!("bytes {start}-{end}/{total}"))
                    .body(fragment.clone())
            })
            .await?;
        match response.status().as_u16() {
            200 | 201 => Ok(response.json().await.ok()),
            _ if response.status().is_success() => Ok(None),
            _ => Err(failure(&self.http, "uploading a fragment", response).await),
        }
    }

    /// Cancels an upload session, so its fragments are not kept until it expires.
    pub async fn cancel_session(&self, upload_url: &str) -> Result<(), Error> {
        let response = self.http.send_presigned("cancelling an upload", |http| http.delete(upload_url)).await?;
        match response.status().as_u16() {
            404 => Ok(()),
            _ if response.status().is_success() => Ok(()),
            _ => Err(failure(&self.http, "cancelling an upload", response).await),
        }
    }

    /// Removes the item at `path`; one that is not there is fine.
    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        let url = self.item_url(path, "");
        let response = self.http.send("deleting", |http, token| http.delete(&url).bearer_auth(token)).await?;
        match response.status().as_u16() {
            404 => Ok(()),
            _ if response.status().is_success() => Ok(()),
            _ => Err(failure(&self.http, "deleting", response).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::backends::oauth::{Client, Tokens};
    use zeroize::Zeroizing;

    fn graph(root: Option<&str>, drive: Option<&str>) -> Graph {
        let client = Client {
            binding: "b".into(),
            token_endpoint: "http://127.0.0.1:1/token".into(),
            client_id: "c".into(),
            client_secret: Zeroizing::new("s".into()),
            scope: None,
        };
        let tokens = Arc::new(Tokens::new(client, Zeroizing::new("r".into()), None));
        Graph::new(Some("http://graph.test/v1.0/"), drive, root, Authorized::new("onedrive", tokens).unwrap())
    }

    #[test]
    fn items_are_addressed_by_path_under_the_root() {
        let mine = graph(None, None);
        assert_eq!(mine.item_url("/", "/children"), "http://graph.test/v1.0/me/drive/root/children");
        assert_eq!(mine.item_url("a b/c#.txt", ""), "http://graph.test/v1.0/me/drive/root:/a%20b/c%23.txt");
        let shared = graph(Some("/Migrations/2026/"), Some("b!x"));
        assert_eq!(
            shared.item_url("in/", "/children"),
            "http://graph.test/v1.0/drives/b%21x/root:/Migrations/2026/in:/children"
        );
        assert_eq!(shared.item_url("", ""), "http://graph.test/v1.0/drives/b%21x/root:/Migrations/2026");
    }
}
