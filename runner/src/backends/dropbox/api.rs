//! The Dropbox API v2 requests a migration needs: metadata, recursive listings page by page,
//! downloads with ranges, uploads in one request or in an upload session, deletes. RPC calls
//! take JSON; content calls take their arguments in the `Dropbox-API-Arg` header, which must
//! be ASCII. Every request goes through [`Authorized`].

use bytes::Bytes;
use opendal::{Error, ErrorKind};
use serde_json::{Value, json};

use super::super::authorized::Authorized;

/// Dropbox's RPC host.
const RPC: &str = "https://api.dropboxapi.com";
/// Dropbox's content host (downloads and uploads).
const CONTENT: &str = "https://content.dropboxapi.com";

/// What Dropbox says about a file or folder.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Entry {
    /// `file` or `folder` (or `deleted`).
    #[serde(rename = ".tag")]
    pub tag: String,
    /// The path with the casing it was created with.
    #[serde(default)]
    pub path_display: String,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    /// The modification time a client set, `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(default)]
    pub client_modified: Option<String>,
    /// Dropbox's content hash, hex.
    #[serde(default)]
    pub content_hash: Option<String>,
}

impl Entry {
    /// Whether this is a folder.
    pub fn is_folder(&self) -> bool {
        self.tag == "folder"
    }
}

#[derive(serde::Deserialize)]
struct Page {
    entries: Vec<Entry>,
    cursor: String,
    has_more: bool,
}

/// One Dropbox account (or team namespace), with paths under `root`.
pub struct DropboxApi {
    rpc: String,
    content: String,
    /// `""` (the account's root) or `/a/b`.
    root: String,
    /// `Dropbox-API-Path-Root` for a team space, when the binding names a namespace.
    path_root: Option<String>,
    http: Authorized,
}

/// A request's JSON with every character outside printable ASCII written as `\uXXXX`, as
/// HTTP headers carry only ASCII and Dropbox asks for this escaping.
pub fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_ascii() && character != '\u{7f}' {
            escaped.push(character);
        } else {
            let mut units = [0u16; 2];
            for unit in character.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    escaped
}

/// Dropbox's `error_summary` (`path/not_found/...`), without its trailing dots.
fn summary(refusal: &Value) -> &str {
    refusal["error_summary"].as_str().unwrap_or_default().trim_end_matches(['.', '/'])
}

impl DropboxApi {
    /// A client for the account's files under `root`; `api` replaces both Dropbox hosts
    /// (a stand-in), `namespace` selects a team space.
    pub fn new(
        api: Option<&str>,
        namespace: Option<&str>,
        root: Option<&str>,
        http: Authorized,
    ) -> Result<Self, serde_json::Error> {
        let root = root.map(|root| root.trim_matches('/')).filter(|root| !root.is_empty());
        let path_root = namespace
            .map(|id| serde_json::to_string(&json!({".tag": "namespace_id", "namespace_id": id})))
            .transpose()?;
        let (rpc, content) = match api {
            Some(api) => (api.trim_end_matches('/').to_owned(), api.trim_end_matches('/').to_owned()),
            None => (RPC.to_owned(), CONTENT.to_owned()),
        };
        Ok(Self { rpc, content, root: root.map(|root| format!("/{root}")).unwrap_or_default(), path_root, http })
    }

    /// The Dropbox path of a service path (relative, folders ending in `/`).
    pub fn path(&self, path: &str) -> String {
        let relative = path.trim_matches('/');
        match (self.root.as_str(), relative) {
            (root, "") => root.to_owned(),
            (root, relative) => format!("{root}/{relative}"),
        }
    }

    /// The service path of an entry: its display path below the root (whose casing may
    /// differ from the binding's), folders ending in `/`.
    pub fn relative(&self, entry: &Entry) -> String {
        let below_root = self.root.split('/').filter(|name| !name.is_empty()).count();
        let relative: Vec<&str> =
            entry.path_display.split('/').filter(|name| !name.is_empty()).skip(below_root).collect();
        let relative = relative.join("/");
        if entry.is_folder() && !relative.is_empty() { format!("{relative}/") } else { relative }
    }

    fn headers(&self, request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
        let request = request.bearer_auth(token);
        match &self.path_root {
            Some(path_root) => request.header("dropbox-api-path-root", path_root),
            None => request,
        }
    }

    /// Calls an RPC endpoint; `Ok(Err(refusal))` is Dropbox's 409 for this call, whose
    /// `error_summary` says why ([`summary`]).
    async fn rpc(&self, doing: &str, endpoint: &str, body: &Value) -> Result<Result<Value, Value>, Error> {
        let url = format!("{}/2/{endpoint}", self.rpc);
        let response = self.http.send(doing, |http, token| self.headers(http.post(&url), token).json(body)).await?;
        self.answer(doing, response).await
    }

    /// Calls a content endpoint with `argument` in the header and `body` as the content.
    async fn content(
        &self,
        doing: &str,
        endpoint: &str,
        argument: &Value,
        body: Bytes,
    ) -> Result<Result<Value, Value>, Error> {
        let url = format!("{}/2/{endpoint}", self.content);
        let argument = ascii_json(argument);
        let response = self
            .http
            .send(doing, |http, token| {
                self.headers(http.post(&url), token)
                    .header("dropbox-api-arg", &argument)
                    .header("content-type", "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        self.answer(doing, response).await
    }

    /// A success's JSON, a 409's, or the failure as OpenDAL's error.
    async fn answer(&self, doing: &str, response: reqwest::Response) -> Result<Result<Value, Value>, Error> {
        let status = response.status();
        let text = response.text().await.map_err(|error| self.http.request_error(doing, error))?;
        match status.as_u16() {
            _ if status.is_success() => Ok(Ok(serde_json::from_str(&text).unwrap_or(Value::Null))),
            409 => Ok(Err(serde_json::from_str(&text).unwrap_or(Value::Null))),
            // A 400 is a request Dropbox could not parse: its text says why.
            400 => Err(self.http.failure(doing, status, text.lines().next().unwrap_or_default())),
            _ => Err(self.http.failure(doing, status, summary(&serde_json::from_str(&text).unwrap_or(Value::Null)))),
        }
    }

    /// A 409 as OpenDAL's error: a missing path is `NotFound`, the rest permanent.
    fn refused(&self, doing: &str, refusal: &Value) -> Error {
        let summary = summary(refusal);
        let kind = if summary.contains("not_found") { ErrorKind::NotFound } else { ErrorKind::Unexpected };
        Error::new(kind, format!("dropbox: {doing}: {summary}"))
    }

    fn entry(&self, doing: &str, value: Value) -> Result<Entry, Error> {
        serde_json::from_value(value)
            .map_err(|error| Error::new(ErrorKind::Unexpected, format!("dropbox: {doing}: unexpected answer: {error}")))
    }

    /// The entry at `path`, or `None`.
    pub async fn metadata(&self, path: &str) -> Result<Option<Entry>, Error> {
        let doing = "reading metadata";
        // Dropbox gives no metadata for the account's root, which is always a folder.
        if self.path(path).is_empty() {
            let root = Entry {
                tag: "folder".to_owned(),
                path_display: String::new(),
                size: 0,
                client_modified: None,
                content_hash: None,
            };
            return Ok(Some(root));
        }
        match self.rpc(doing, "files/get_metadata", &json!({"path": self.path(path)})).await? {
            Ok(value) => self.entry(doing, value).map(Some),
            Err(refusal) if summary(&refusal).contains("not_found") => Ok(None),
            Err(refusal) => Err(self.refused(doing, &refusal)),
        }
    }

    /// Every entry in the folder at `path` (beneath it, when `recursive`), page by page; a
    /// folder that is not there is empty.
    pub async fn list(&self, path: &str, recursive: bool) -> Result<Vec<Entry>, Error> {
        let doing = "listing a folder";
        let first = json!({"path": self.path(path), "recursive": recursive, "limit": 2000});
        let mut page = match self.rpc(doing, "files/list_folder", &first).await? {
            Ok(value) => value,
            Err(refusal) if summary(&refusal).contains("not_found") => return Ok(Vec::new()),
            Err(refusal) => return Err(self.refused(doing, &refusal)),
        };
        let mut entries = Vec::new();
        loop {
            let Page { entries: more, cursor, has_more } = serde_json::from_value(page).map_err(|error| {
                Error::new(ErrorKind::Unexpected, format!("dropbox: {doing}: unexpected answer: {error}"))
            })?;
            entries.extend(more.into_iter().filter(|entry| entry.tag != "deleted"));
            if !has_more {
                return Ok(entries);
            }
            // A cursor that expired mid-listing cannot be resumed: the listing fails, and a
            // retry starts it again.
            page = self
                .rpc(doing, "files/list_folder/continue", &json!({"cursor": cursor}))
                .await?
                .map_err(|refusal| self.refused(doing, &refusal).set_temporary())?;
        }
    }

    /// The content of the file at `path` from `offset`, `length` bytes (or to its end).
    pub async fn download(&self, path: &str, offset: u64, length: Option<u64>) -> Result<reqwest::Response, Error> {
        let url = format!("{}/2/files/download", self.content);
        let argument = ascii_json(&json!({"path": self.path(path)}));
        let response = self
            .http
            .send("downloading", |http, token| {
                super::super::authorized::with_range(
                    self.headers(http.post(&url), token).header("dropbox-api-arg", &argument),
                    offset,
                    length,
                )
            })
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        match self.answer("downloading", response).await? {
            Ok(_) => Err(Error::new(ErrorKind::Unexpected, "dropbox: downloading: unexpected answer")),
            Err(refusal) => Err(self.refused("downloading", &refusal)),
        }
    }

    /// What a finished upload commits: the path, replacing what is there, with the
    /// modification time the source had (`YYYY-MM-DDTHH:MM:SSZ`).
    fn commit(&self, path: &str, modified: Option<&str>) -> Value {
        let mut commit = json!({"path": self.path(path), "mode": "overwrite", "autorename": false, "mute": true});
        if let Some(modified) = modified {
            commit["client_modified"] = modified.into();
        }
        commit
    }

    /// Uploads a file in one request (Dropbox takes up to 150 MiB this way).
    pub async fn upload_whole(&self, path: &str, content: Bytes, modified: Option<&str>) -> Result<Entry, Error> {
        let doing = "uploading";
        match self.content(doing, "files/upload", &self.commit(path, modified), content).await? {
            Ok(value) => self.entry(doing, value),
            Err(refusal) => Err(self.refused(doing, &refusal)),
        }
    }

    /// Starts an upload session with its first bytes; returns its ID.
    pub async fn start_session(&self, first: Bytes) -> Result<String, Error> {
        let doing = "starting an upload session";
        let value = self
            .content(doing, "files/upload_session/start", &json!({"close": false}), first)
            .await?
            .map_err(|refusal| self.refused(doing, &refusal))?;
        value["session_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "dropbox: starting an upload session: no session ID"))
    }

    /// Adds `chunk` at `offset` to a session. An `incorrect_offset` that says the chunk
    /// already arrived (its answer was lost, and this is the retry) counts as sent.
    pub async fn append(&self, session: &str, offset: u64, chunk: Bytes) -> Result<(), Error> {
        let doing = "uploading a chunk";
        let length = chunk.len() as u64;
        let argument = json!({"cursor": {"session_id": session, "offset": offset}, "close": false});
        match self.content(doing, "files/upload_session/append_v2", &argument, chunk).await? {
            Ok(_) => Ok(()),
            Err(refusal) if refusal["error"]["correct_offset"].as_u64() == Some(offset + length) => Ok(()),
            Err(refusal) => Err(self.refused(doing, &refusal)),
        }
    }

    /// Ends a session with its last bytes (after `offset` sent) and commits the file.
    pub async fn finish(
        &self,
        session: &str,
        offset: u64,
        last: Bytes,
        path: &str,
        modified: Option<&str>,
    ) -> Result<Entry, Error> {
        let doing = "finishing an upload";
        let argument =
            json!({"cursor": {"session_id": session, "offset": offset}, "commit": self.commit(path, modified)});
        match self.content(doing, "files/upload_session/finish", &argument, last).await? {
            Ok(value) => self.entry(doing, value),
            Err(refusal) => Err(self.refused(doing, &refusal)),
        }
    }

    /// Removes the file or folder at `path`; one that is not there is fine.
    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        match self.rpc("deleting", "files/delete_v2", &json!({"path": self.path(path)})).await? {
            Ok(_) => Ok(()),
            Err(refusal) if summary(&refusal).contains("not_found") => Ok(()),
            Err(refusal) => Err(self.refused("deleting", &refusal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arguments_are_ascii_with_unicode_escaped() {
        let argument = ascii_json(&json!({"path": "/naïve 😀/\u{7f}x"}));
        assert!(argument.is_ascii(), "{argument}");
        assert_eq!(argument, r#"{"path":"/na\u00efve \ud83d\ude00/\u007fx"}"#);
        let decoded: Value = serde_json::from_str(&argument).unwrap();
        assert_eq!(decoded["path"], "/naïve 😀/\u{7f}x");
    }
}
