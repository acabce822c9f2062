//! The Google Drive API v3 requests a migration needs. Drive addresses files by ID, and a
//! folder may hold two items of one name: paths are resolved name by name from the root,
//! folder IDs are remembered, and a name held twice is refused rather than guessed.

use std::collections::HashMap;

use bytes::Bytes;
use opendal::{Error, ErrorKind};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::super::authorized::Authorized;

/// Google's API host.
const API: &str = "https://www.googleapis.com";
/// A folder's MIME type.
pub const FOLDER: &str = "application/vnd.google-apps.folder";
/// What every listing and lookup asks for.
const FIELDS: &str = "id,name,mimeType,size,md5Checksum,modifiedTime";

/// What Drive says about a file or folder.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// The ID.
    pub id: String,
    /// The name (unique in its folder only by convention).
    pub name: String,
    /// `application/vnd.google-apps.folder` for folders, `application/vnd.google-apps.*` for
    /// Docs, Sheets and the like, which hold no bytes to copy.
    pub mime_type: String,
    /// Bytes, as a decimal string (binary files only).
    #[serde(default)]
    pub size: Option<String>,
    /// The MD5 Drive computed (binary files only), hex.
    #[serde(default)]
    pub md5_checksum: Option<String>,
    /// The modification time, RFC 3339 (settable by a client).
    #[serde(default)]
    pub modified_time: Option<String>,
}

impl File {
    /// Whether this is a folder.
    pub fn is_folder(&self) -> bool {
        self.mime_type == FOLDER
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    files: Vec<File>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// A string literal in Drive's query language.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn unexpected(doing: &str, error: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unexpected, format!("gdrive: {doing}: unexpected answer: {error}"))
}

/// One drive (My Drive or a shared drive), with paths under `root`.
pub struct DriveApi {
    api: String,
    /// The shared drive, when the binding names one.
    shared_drive: Option<String>,
    /// The root folder's path below the drive's root, names split.
    root: Vec<String>,
    /// Folder IDs by path below the root (`""` is the root).
    folders: tokio::sync::Mutex<HashMap<String, String>>,
    http: Authorized,
}

impl DriveApi {
    /// A client for My Drive, or the shared drive `drive_id`, with paths under `root`;
    /// `api` replaces Google's host (a stand-in).
    pub fn new(api: Option<&str>, drive_id: Option<&str>, root: Option<&str>, http: Authorized) -> Self {
        let root = root.unwrap_or_default().split('/').filter(|name| !name.is_empty()).map(str::to_owned).collect();
        Self {
            api: api.unwrap_or(API).trim_end_matches('/').to_owned(),
            shared_drive: drive_id.map(str::to_owned),
            root,
            folders: tokio::sync::Mutex::new(HashMap::new()),
            http,
        }
    }

    /// The query parameters every call needs to reach shared drives too.
    fn drive_parameters(&self) -> String {
        match &self.shared_drive {
            Some(id) => format!(
                "supportsAllDrives=true&includeItemsFromAllDrives=true&corpora=drive&driveId={}",
                utf8_percent_encode(id, NON_ALPHANUMERIC)
            ),
            None => "supportsAllDrives=true".to_owned(),
        }
    }

    /// The files a query finds, page by page.
    async fn search(&self, query: &str) -> Result<Vec<File>, Error> {
        let doing = "listing a folder";
        let mut files = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/drive/v3/files?q={}&fields=nextPageToken,files({FIELDS})&pageSize=1000&{}",
                self.api,
                utf8_percent_encode(query, NON_ALPHANUMERIC),
                self.drive_parameters()
            );
            if let Some(token) = &token {
                url.push_str(&format!("&pageToken={}", utf8_percent_encode(token, NON_ALPHANUMERIC)));
            }
            let response = self.http.send(doing, |http, bearer| http.get(&url).bearer_auth(bearer)).await?;
            let page: Page = self.json(doing, response).await?;
            files.extend(page.files);
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(files),
            }
        }
    }

    /// A success's JSON, or the failure as OpenDAL's error with Drive's reason.
    async fn json<T: serde::de::DeserializeOwned>(&self, doing: &str, response: reqwest::Response) -> Result<T, Error> {
        if response.status().is_success() {
            return response.json().await.map_err(|error| unexpected(doing, error));
        }
        Err(self.failure(doing, response).await)
    }

    async fn failure(&self, doing: &str, response: reqwest::Response) -> Error {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let reason = body["error"]["errors"][0]["reason"].as_str().unwrap_or_default();
        let error = self.http.failure(doing, status, reason);
        if reason == "fileNotDownloadable" {
            // Google Docs, Sheets and Slides have no bytes: only an export has.
            return Error::new(
                ErrorKind::Unsupported,
                format!("{error}: a Google Docs, Sheets or Slides file holds no bytes to copy; export it first"),
            );
        }
        // Drive also says `403 rateLimitExceeded` when it means "slow down".
        if reason.contains("rateLimitExceeded") { error.set_temporary() } else { error }
    }

    /// The items named `name` in the folder `parent`.
    async fn named(&self, parent: &str, name: &str) -> Result<Vec<File>, Error> {
        let query = format!("{} in parents and name = {} and trashed = false", literal(parent), literal(name));
        self.search(&query).await
    }

    /// The one item named `name` in `parent`, if any; two are refused.
    async fn child(&self, parent: &str, name: &str, folder_path: &str) -> Result<Option<File>, Error> {
        let mut found = self.named(parent, name).await?;
        if found.len() > 1 {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!(
                    "gdrive: the folder {folder_path:?} holds {} items named {name:?}; Drive allows it, but a path \
                     cannot say which is meant: rename or remove all but one",
                    found.len()
                ),
            ));
        }
        Ok(found.pop())
    }

    /// The ID of the folder at `path` (relative, `""` for the root), or `None`; with
    /// `create`, missing folders are made. Folder IDs are remembered.
    pub async fn folder(&self, path: &str, create: bool) -> Result<Option<String>, Error> {
        let below: Vec<&str> = path.split('/').filter(|name| !name.is_empty()).collect();
        // One lock over lookups and creations, so two uploads never make the same folder twice.
        let mut folders = self.folders.lock().await;
        // From the deepest folder already known, else from the binding's root.
        let known = (0..=below.len())
            .rev()
            .find_map(|depth| folders.get(&below[..depth].join("/")).map(|id| (depth, id.clone())));
        let (start, mut id) = match known {
            Some(known) => known,
            None => {
                let mut id = self.shared_drive.clone().unwrap_or_else(|| "root".to_owned());
                for (depth, name) in self.root.iter().enumerate() {
                    match self.step(&id, name, &self.root[..depth].join("/"), create).await? {
                        Some(found) => id = found,
                        None => return Ok(None),
                    }
                }
                folders.insert(String::new(), id.clone());
                (0, id)
            }
        };
        for depth in start..below.len() {
            match self.step(&id, below[depth], &below[..depth].join("/"), create).await? {
                Some(found) => id = found,
                None => return Ok(None),
            }
            folders.insert(below[..=depth].join("/"), id.clone());
        }
        Ok(Some(id))
    }

    /// The folder `name` in `parent` (at `walked`), made if missing and `create`.
    async fn step(&self, parent: &str, name: &str, walked: &str, create: bool) -> Result<Option<String>, Error> {
        match self.child(parent, name, walked).await? {
            Some(found) if found.is_folder() => Ok(Some(found.id)),
            Some(_) => Err(Error::new(
                ErrorKind::Unexpected,
                format!("gdrive: {walked:?} holds a file named {name:?} where a folder is needed"),
            )),
            None if create => self.create_folder(parent, name).await.map(Some),
            None => Ok(None),
        }
    }

    async fn create_folder(&self, parent: &str, name: &str) -> Result<String, Error> {
        let doing = "making a folder";
        let url = format!("{}/drive/v3/files?fields=id&{}", self.api, self.drive_parameters());
        let body = json!({"name": name, "mimeType": FOLDER, "parents": [parent]});
        let response = self.http.send(doing, |http, bearer| http.post(&url).bearer_auth(bearer).json(&body)).await?;
        let created: Value = self.json(doing, response).await?;
        created["id"].as_str().map(str::to_owned).ok_or_else(|| unexpected(doing, "no id"))
    }

    /// The item at `path` (relative), or `None`.
    pub async fn item(&self, path: &str) -> Result<Option<File>, Error> {
        let path = path.trim_matches('/');
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() {
            return Ok(self.folder("", false).await?.map(|id| File {
                id,
                name: String::new(),
                mime_type: FOLDER.to_owned(),
                size: None,
                md5_checksum: None,
                modified_time: None,
            }));
        }
        let Some(parent_id) = self.folder(parent, false).await? else { return Ok(None) };
        self.child(&parent_id, name, parent).await
    }

    /// The items in the folder at `path`; a folder that is not there is empty. Subfolders'
    /// IDs are remembered for the listings that follow.
    pub async fn children(&self, path: &str) -> Result<Vec<File>, Error> {
        let path = path.trim_matches('/');
        let Some(id) = self.folder(path, false).await? else { return Ok(Vec::new()) };
        let files = self.search(&format!("{} in parents and trashed = false", literal(&id))).await?;
        let mut folders = self.folders.lock().await;
        for folder in files.iter().filter(|file| file.is_folder()) {
            let key = if path.is_empty() { folder.name.clone() } else { format!("{path}/{}", folder.name) };
            folders.entry(key).or_insert_with(|| folder.id.clone());
        }
        Ok(files)
    }

    /// The content of the file `id` from `offset`, `length` bytes (or to its end).
    pub async fn download(&self, id: &str, offset: u64, length: Option<u64>) -> Result<reqwest::Response, Error> {
        let url = format!(
            "{}/drive/v3/files/{}?alt=media&{}",
            self.api,
            utf8_percent_encode(id, NON_ALPHANUMERIC),
            self.drive_parameters()
        );
        let response = self
            .http
            .send("downloading", |http, bearer| {
                super::super::authorized::with_range(http.get(&url).bearer_auth(bearer), offset, length)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.failure("downloading", response).await);
        }
        Ok(response)
    }

    /// Where an upload goes: a new file in the folder at `parent`, or a new version of `id`.
    fn upload_url(&self, existing: Option<&str>, kind: &str) -> String {
        let parameters = self.drive_parameters();
        match existing {
            Some(id) => format!(
                "{}/upload/drive/v3/files/{}?uploadType={kind}&fields={FIELDS}&{parameters}",
                self.api,
                utf8_percent_encode(id, NON_ALPHANUMERIC)
            ),
            None => format!("{}/upload/drive/v3/files?uploadType={kind}&fields={FIELDS}&{parameters}", self.api),
        }
    }

    /// The metadata an upload sends: the name and folder of a new file, and the source's
    /// modification time.
    fn upload_metadata(name: &str, parent: Option<&str>, modified: Option<&str>) -> Value {
        let mut metadata = json!({});
        if let Some(parent) = parent {
            metadata["name"] = name.into();
            metadata["parents"] = json!([parent]);
        }
        if let Some(modified) = modified {
            metadata["modifiedTime"] = modified.into();
        }
        metadata
    }

    /// The file an upload to `path` writes: a new version of the one there, else a new file
    /// in its folder (made if missing). Returns the existing ID or the parent's.
    pub async fn target(&self, path: &str) -> Result<UploadTarget, Error> {
        let path = path.trim_matches('/');
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent_id = self
            .folder(parent, true)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "gdrive: the folder could not be made"))?;
        let existing = match self.child(&parent_id, name, parent).await? {
            Some(found) if found.is_folder() => {
                return Err(Error::new(ErrorKind::Unexpected, format!("gdrive: {path} is a folder")));
            }
            found => found.map(|file| file.id),
        };
        Ok(UploadTarget { name: name.to_owned(), parent: parent_id, existing })
    }

    /// Uploads a whole file in one `multipart/related` request.
    pub async fn upload_whole(
        &self,
        target: &UploadTarget,
        content: Bytes,
        modified: Option<&str>,
    ) -> Result<File, Error> {
        let doing = "uploading";
        let metadata = Self::upload_metadata(&target.name, target.new_in(), modified);
        let boundary = format!("ferry-{:016x}", getrandom::u64().unwrap_or(0x5eed));
        let mut body = Vec::with_capacity(content.len() + 512);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
        let body = Bytes::from(body);
        let url = self.upload_url(target.existing.as_deref(), "multipart");
        let content_type = format!("multipart/related; boundary={boundary}");
        let response = self
            .http
            .send(doing, |http, bearer| {
                let request = if target.existing.is_some() { http.patch(&url) } else { http.post(&url) };
                request.bearer_auth(bearer).header("content-type", &content_type).body(body.clone())
            })
            .await?;
        self.json(doing, response).await
    }

    /// Starts a resumable upload; returns the session URL, which authorizes its chunks.
    pub async fn start_session(&self, target: &UploadTarget, modified: Option<&str>) -> Result<String, Error> {
        let doing = "starting an upload session";
        let metadata = Self::upload_metadata(&target.name, target.new_in(), modified);
        let url = self.upload_url(target.existing.as_deref(), "resumable");
        let response = self
            .http
            .send(doing, |http, bearer| {
                let request = if target.existing.is_some() { http.patch(&url) } else { http.post(&url) };
                request.bearer_auth(bearer).json(&metadata)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(doing, response).await);
        }
        response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| unexpected(doing, "no session URL"))
    }

    /// Sends bytes `offset..` of a session; `total` is known with the last chunk. Returns
    /// the file once the upload is complete.
    pub async fn send_chunk(
        &self,
        session: &str,
        offset: u64,
        chunk: Bytes,
        total: Option<u64>,
    ) -> Result<Option<File>, Error> {
        let doing = "uploading a chunk";
        let range = match (chunk.len() as u64, total) {
            (0, Some(total)) => format!("bytes */{total}"),
            (length, Some(total)) => format!("bytes {offset}-{}/{total}", offset + length - 1),
            (length, None) => format!("bytes {offset}-{}/*", offset + length - 1),
        };
        let response = self
            .http
            .send_presigned(doing, |http| http.put(session).header("content-range", &range).body(chunk.clone()))
            .await?;
        match response.status().as_u16() {
            200 | 201 => self.json(doing, response).await.map(Some),
            // 308: received; the Range header says how far, which must be all that was sent.
            308 => {
                let received = response
                    .headers()
                    .get("range")
                    .and_then(|value| value.to_str().ok()?.rsplit('-').next()?.parse::<u64>().ok())
                    .map_or(0, |last| last + 1);
                let expected = offset + chunk.len() as u64;
                if received != expected {
                    return Err(Error::new(
                        ErrorKind::Unexpected,
                        format!("gdrive: {doing}: the session holds {received} bytes, not {expected}"),
                    )
                    .set_temporary());
                }
                Ok(None)
            }
            _ => Err(self.failure(doing, response).await),
        }
    }

    /// Cancels a resumable upload.
    pub async fn cancel_session(&self, session: &str) -> Result<(), Error> {
        let response = self.http.send_presigned("cancelling an upload", |http| http.delete(session)).await?;
        match response.status().as_u16() {
            404 | 499 => Ok(()),
            _ if response.status().is_success() => Ok(()),
            _ => Err(self.failure("cancelling an upload", response).await),
        }
    }

    /// Removes the item at `path`, and a folder's contents; one that is not there is fine.
    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        let Some(item) = self.item(path).await? else { return Ok(()) };
        let url = format!(
            "{}/drive/v3/files/{}?{}",
            self.api,
            utf8_percent_encode(&item.id, NON_ALPHANUMERIC),
            self.drive_parameters()
        );
        let response = self.http.send("deleting", |http, bearer| http.delete(&url).bearer_auth(bearer)).await?;
        if item.is_folder() {
            let prefix = format!("{}/", path.trim_matches('/'));
            self.folders.lock().await.retain(|known, _| !format!("{known}/").starts_with(&prefix));
        }
        match response.status().as_u16() {
            404 => Ok(()),
            _ if response.status().is_success() => Ok(()),
            _ => Err(self.failure("deleting", response).await),
        }
    }
}

/// Where one upload goes.
pub struct UploadTarget {
    name: String,
    parent: String,
    /// The file replaced with a new version, if one is at the path.
    existing: Option<String>,
}

impl UploadTarget {
    /// The folder a new file is made in (none when a file is replaced).
    fn new_in(&self) -> Option<&str> {
        self.existing.is_none().then_some(self.parent.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("it's a\\b"), r"'it\'s a\\b'");
    }
}
