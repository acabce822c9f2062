//! A stand-in for the part of the Google Drive API v3 a Drive migration uses, built from its
//! documented requests and answers: items addressed by id, each with one parent (names may
//! repeat within a folder), children found by a `q` query in pages linked by
//! `nextPageToken`, downloads with `alt=media` (with ranges), folders made from metadata,
//! uploads in one `multipart/related` request or in a resumable session of `Content-Range`
//! chunks, metadata updates, deletes. My Drive and one shared drive exist from the start.
//! Requests need a bearer token; the test can make the next ones answer 401 or 429 with
//! `Retry-After`, and can read and change what the drives hold.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use md5::Digest as _;
use serde_json::{Value, json};
use sha2::Digest as _;

/// Children per page at most, small so that paging is exercised.
const PAGE: usize = 25;
/// Resumable chunks but the last must be multiples of 256 KiB.
const CHUNK: usize = 256 << 10;
const FOLDER: &str = "application/vnd.google-apps.folder";
const DOCUMENT: &str = "application/vnd.google-apps.document";
/// Google's own types (Docs, folders, ...): they have no bytes to upload or download.
const GOOGLE_TYPES: &str = "application/vnd.google-apps.";

/// A binary file's bytes and the checksums Drive reports, computed once: listings repeat them.
struct Media {
    bytes: Vec<u8>,
    md5: String,
    sha256: String,
}

impl Media {
    fn new(bytes: Vec<u8>) -> Self {
        Self { md5: hex::encode(md5::Md5::digest(&bytes)), sha256: hex::encode(sha2::Sha256::digest(&bytes)), bytes }
    }
}

struct Item {
    name: String,
    /// `None` for the root folders of My Drive and of the shared drive.
    parent: Option<String>,
    mime: String,
    /// Folders and Google Docs have none.
    content: Option<Media>,
    modified: String,
}

fn item(name: &str, parent: &str, mime: &str, content: Option<Vec<u8>>) -> Item {
    Item {
        name: name.to_owned(),
        parent: Some(parent.to_owned()),
        mime: mime.to_owned(),
        content: content.map(Media::new),
        modified: now(),
    }
}

/// A resumable upload session.
struct Session {
    /// The file whose content it replaces; `None` to create one.
    target: Option<String>,
    metadata: Value,
    /// `X-Upload-Content-Type`: the file's type when the metadata names none.
    media_type: Option<String>,
    received: Vec<u8>,
    total: Option<u64>,
    /// The file, once complete: Drive answers later requests with it again.
    finished: Option<String>,
}

#[derive(Default)]
struct Drive {
    /// Every item by id, the roots included.
    items: BTreeMap<String, Item>,
    root: String,
    shared: String,
    sessions: HashMap<String, Session>,
    next_id: u64,
    reject: u32,
    throttle: u32,
    rejected: u32,
    throttled: u32,
}

impl Drive {
    fn new() -> Self {
        let mut drive = Self::default();
        let root = |name: &str| Item { parent: None, ..item(name, "", FOLDER, None) };
        drive.root = drive.add(root("My Drive"));
        drive.shared = drive.add(root("Ferry shared drive"));
        drive
    }

    /// Adds an item under a fresh id, which it returns.
    fn add(&mut self, item: Item) -> String {
        self.next_id += 1;
        let id = fresh_id(self.next_id);
        self.items.insert(id.clone(), item);
        id
    }

    /// The item an id names: `root` is an alias of My Drive's root folder.
    fn resolve<'a>(&'a self, id: &'a str) -> &'a str {
        if id == "root" { &self.root } else { id }
    }

    /// The child of `parent` called `name` that is `wanted`; of duplicates, the lowest id.
    fn child(&self, parent: &str, name: &str, wanted: impl Fn(&Item) -> bool) -> Option<String> {
        let mut children = self.items.iter().filter(|(_, item)| item.parent.as_deref() == Some(parent));
        children.find(|(_, item)| item.name == name && wanted(item)).map(|(id, _)| id.clone())
    }

    /// The item at `path` from `root`.
    fn lookup(&self, root: &str, path: &str) -> Option<String> {
        let mut names = path.split('/').filter(|name| !name.is_empty());
        names.try_fold(root.to_owned(), |parent, name| self.child(&parent, name, |_| true))
    }

    /// The folder `path` is in (made as needed, in My Drive) and its last name.
    fn folders_for<'p>(&mut self, path: &'p str) -> (String, &'p str) {
        let mut names: Vec<&str> = path.split('/').filter(|name| !name.is_empty()).collect();
        let name = names.pop().unwrap_or_else(|| panic!("{path:?} names no file"));
        let mut parent = self.root.clone();
        for folder in names {
            parent = match self.child(&parent, folder, |item| item.mime == FOLDER) {
                Some(id) => id,
                None => self.add(item(folder, &parent, FOLDER, None)),
            };
        }
        (parent, name)
    }

    /// Every binary file beneath `folder`, by path from it.
    fn tree(&self, folder: &str, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
        for (id, item) in self.items.iter().filter(|(_, item)| item.parent.as_deref() == Some(folder)) {
            let path = format!("{prefix}{}", item.name);
            match &item.content {
                Some(media) => {
                    files.entry(path).or_insert_with(|| media.bytes.clone());
                }
                None if item.mime == FOLDER => self.tree(id, &format!("{path}/"), files),
                None => {}
            }
        }
    }

    /// Removes an item and everything beneath it.
    fn remove(&mut self, id: &str) {
        self.items.remove(id);
        let children: Vec<String> = self
            .items
            .iter()
            .filter(|(_, item)| item.parent.as_deref() == Some(id))
            .map(|(id, _)| id.clone())
            .collect();
        for child in children {
            self.remove(&child);
        }
    }
}

/// An id that looks like Drive's (random, 23 letters and digits) but, as a counter mixed by a
/// bijection, never repeats.
fn fresh_id(counter: u64) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let base62 = |mut z: u64| {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut text = String::new();
        for _ in 0..11 {
            text.push(char::from(DIGITS[(z % 62) as usize]));
            z /= 62;
        }
        text
    };
    format!("1{}{}", base62(mix(counter)), base62(mix(!counter)))
}

/// A running stand-in; it stops when dropped.
pub struct DriveStandIn {
    /// Where it listens.
    pub address: SocketAddr,
    drive: Arc<Mutex<Drive>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Shared = (Arc<Mutex<Drive>>, SocketAddr);

impl DriveStandIn {
    /// Starts one on a free loopback port, on a thread of its own (so async tests can
    /// start one too).
    pub fn start() -> Self {
        let drive = Arc::new(Mutex::new(Drive::new()));
        let shared = drive.clone();
        let (address, stop) = crate::serve_on_own_thread("Drive", move |address| {
            // Multipart uploads and resumable chunks of a good size (Drive takes more).
            axum::Router::new()
                .fallback(handle)
                .layer(axum::extract::DefaultBodyLimit::max(80 << 20))
                .with_state((shared, address))
        });
        Self { address, drive, _stop: stop }
    }

    /// The API root a binding names (`apiEndpoint`; Drive's is `https://www.googleapis.com`).
    pub fn api_endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Drive) -> T) -> T {
        f(&mut self.drive.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The shared drive's id, which is also its root folder's.
    pub fn shared_drive_id(&self) -> String {
        self.with(|drive| drive.shared.clone())
    }

    /// Every binary file in My Drive, by path from its root (`Migrations/a/b.txt`); of
    /// duplicates, one.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|drive| {
            let mut files = BTreeMap::new();
            drive.tree(&drive.root, "", &mut files);
            files
        })
    }

    /// Every binary file in the shared drive, by path from its root.
    pub fn shared_files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|drive| {
            let mut files = BTreeMap::new();
            drive.tree(&drive.shared, "", &mut files);
            files
        })
    }

    /// Puts a file in My Drive, as another client would: folders made as needed, the content
    /// of an existing file replaced.
    pub fn put(&self, path: &str, content: &[u8]) {
        self.with(|drive| {
            let (parent, name) = drive.folders_for(path);
            let existing = drive.child(&parent, name, |item| item.content.is_some());
            match existing.and_then(|id| drive.items.get_mut(&id)) {
                Some(item) => {
                    item.content = Some(Media::new(content.to_vec()));
                    item.modified = now();
                }
                None => {
                    drive.add(item(name, &parent, "application/octet-stream", Some(content.to_vec())));
                }
            }
        });
    }

    /// Puts a Google Docs file in My Drive: it has no size nor checksums and cannot be
    /// downloaded.
    pub fn put_document(&self, path: &str) {
        self.with(|drive| {
            let (parent, name) = drive.folders_for(path);
            drive.add(item(name, &parent, DOCUMENT, None));
        });
    }

    /// Puts another file of the same name beside any there, as Drive allows.
    pub fn put_duplicate(&self, path: &str, content: &[u8]) {
        self.with(|drive| {
            let (parent, name) = drive.folders_for(path);
            drive.add(item(name, &parent, "application/octet-stream", Some(content.to_vec())));
        });
    }

    /// The `modifiedTime` of the item at `path` in My Drive.
    pub fn modified(&self, path: &str) -> Option<String> {
        self.with(|drive| {
            let id = drive.lookup(&drive.root, path)?;
            drive.items.get(&id).map(|item| item.modified.clone())
        })
    }

    /// Makes the next `count` API requests answer 401.
    pub fn reject_next(&self, count: u32) {
        self.with(|drive| drive.reject = count);
    }

    /// Makes the next `count` API requests answer 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, count: u32) {
        self.with(|drive| drive.throttle = count);
    }

    /// How many requests were answered 401 and 429.
    pub fn refusals(&self) -> (u32, u32) {
        self.with(|drive| (drive.rejected, drive.throttled))
    }

    /// How many resumable upload sessions are open (started, neither finished nor cancelled).
    pub fn open_sessions(&self) -> usize {
        self.with(|drive| drive.sessions.values().filter(|session| session.finished.is_none()).count())
    }
}

/// An answer other than the one asked for: boxed, as it is large and mostly not needed.
type Refusal = Box<Response>;

fn error(status: StatusCode, reason: &str, message: &str) -> Refusal {
    let errors = [json!({"message": message, "domain": "global", "reason": reason})];
    let body = json!({"error": {"code": status.as_u16(), "message": message, "errors": errors}});
    Box::new((status, axum::Json(body)).into_response())
}

fn not_found(id: &str) -> Refusal {
    error(StatusCode::NOT_FOUND, "notFound", &format!("File not found: {id}."))
}

fn invalid(message: &str) -> Refusal {
    error(StatusCode::BAD_REQUEST, "invalid", message)
}

/// The file resource, with every field a client may ask for.
fn resource(id: &str, item: &Item) -> Value {
    let mut resource = json!({
        "kind": "drive#file", "id": id, "name": item.name, "mimeType": item.mime,
        "modifiedTime": item.modified, "trashed": false,
    });
    if let Some(parent) = &item.parent {
        resource["parents"] = json!([parent]);
    }
    if let Some(media) = &item.content {
        resource["size"] = media.bytes.len().to_string().into();
        resource["md5Checksum"] = media.md5.clone().into();
        resource["sha256Checksum"] = media.sha256.clone().into();
    }
    resource
}

fn found(drive: &Drive, id: &str) -> Result<Response, Refusal> {
    let item = drive.items.get(id).ok_or_else(|| not_found(id))?;
    Ok(axum::Json(resource(id, item)).into_response())
}

/// A header's value, if it is text.
fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The query's parameters, decoded as a form is (`+` is a space, as clients encode it).
fn parameters(uri: &Uri) -> HashMap<String, String> {
    let decode =
        |text: &str| percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned();
    let pairs = uri.query().unwrap_or("").split('&').filter(|pair| !pair.is_empty());
    pairs
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(key, value)| (decode(key), decode(value)))
        .collect()
}

async fn handle(
    State((drive, address)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parameters = parameters(&uri);
    let mut drive = drive.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path();
    // The session URL authorizes its requests: they carry no token, and are not refused.
    if let Some(upload) = parameters.get("upload_id").filter(|_| path.starts_with("/upload/drive/v3/")) {
        return session(&mut drive, upload, &method, &headers, &body);
    }
    let (upload, rest) = match (path.strip_prefix("/upload/drive/v3/"), path.strip_prefix("/drive/v3/")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return *error(StatusCode::NOT_FOUND, "notFound", "Not Found"),
    };
    if let Some(refusal) = refuse(&mut drive, &headers) {
        return refusal;
    }
    let id = match rest.strip_prefix("files").map(|id| id.strip_prefix('/')) {
        Some(None) if rest == "files" => None,
        Some(Some(id)) if !id.is_empty() && !id.contains('/') => {
            Some(drive.resolve(&percent_encoding::percent_decode_str(id).decode_utf8_lossy()).to_owned())
        }
        _ => return *error(StatusCode::NOT_FOUND, "notFound", "Not Found"),
    };
    let media = parameters.get("alt").is_some_and(|alt| alt == "media");
    let answer = match (upload, method, id) {
        (false, Method::GET, None) => list(&drive, &parameters),
        (false, Method::GET, Some(id)) if media => download(&drive, &id, &headers),
        (false, Method::GET, Some(id)) => found(&drive, &id),
        (false, Method::POST, None) => parse_metadata(&body)
            .and_then(|metadata| create(&mut drive, &metadata, None, None))
            .and_then(|id| found(&drive, &id)),
        (false, Method::PATCH, Some(id)) => parse_metadata(&body)
            .and_then(|metadata| update(&mut drive, &id, &metadata, None))
            .and_then(|()| found(&drive, &id)),
        (false, Method::DELETE, Some(id)) if drive.items.get(&id).is_some_and(|item| item.parent.is_some()) => {
            drive.remove(&id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (false, Method::DELETE, Some(id)) if drive.items.contains_key(&id) => {
            Err(error(StatusCode::FORBIDDEN, "insufficientFilePermissions", "A root folder cannot be deleted."))
        }
        (false, Method::DELETE, Some(id)) => Err(not_found(&id)),
        (true, Method::POST, target @ None) | (true, Method::PATCH, target @ Some(_)) => {
            upload_media(&mut drive, address, target, &parameters, &headers, &body)
        }
        _ => Err(error(StatusCode::NOT_FOUND, "notFound", "Not Found")),
    };
    answer.unwrap_or_else(|refusal| *refusal)
}

/// A 401 without a bearer token or while `reject_next` counts, then a 429 while
/// `throttle_next` counts.
fn refuse(drive: &mut Drive, headers: &HeaderMap) -> Option<Response> {
    let authorized = text(headers, header::AUTHORIZATION)
        .is_some_and(|value| value.len() > "Bearer ".len() && value.starts_with("Bearer "));
    if !authorized || drive.reject > 0 {
        drive.reject = drive.reject.saturating_sub(1);
        drive.rejected += 1;
        let refusal = *error(StatusCode::UNAUTHORIZED, "authError", "Request had invalid authentication credentials.");
        return Some(
            ([(header::WWW_AUTHENTICATE, "Bearer realm=\"https://accounts.google.com/\"")], refusal).into_response(),
        );
    }
    if drive.throttle > 0 {
        drive.throttle -= 1;
        drive.throttled += 1;
        let refusal = *error(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded", "Rate Limit Exceeded");
        return Some(([(header::RETRY_AFTER, "1")], refusal).into_response());
    }
    None
}

/// A JSON metadata body (an empty one is no metadata).
fn parse_metadata(body: &[u8]) -> Result<Value, Refusal> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice(body) {
        Ok(metadata @ Value::Object(_)) => Ok(metadata),
        _ => Err(error(StatusCode::BAD_REQUEST, "parseError", "Parse Error")),
    }
}

/// The `modifiedTime` the metadata sets, in Drive's form (UTC, milliseconds).
fn modified_time(metadata: &Value) -> Result<Option<String>, Refusal> {
    match &metadata["modifiedTime"] {
        Value::Null => Ok(None),
        time => time
            .as_str()
            .and_then(parse_time)
            .map(|millis| Some(format_time(millis)))
            .ok_or_else(|| invalid(&format!("Invalid value for: modifiedTime: {time}"))),
    }
}

/// The folder the metadata puts a new file in: its first parent, or My Drive's root.
fn parent_of(drive: &Drive, metadata: &Value) -> Result<String, Refusal> {
    let parent = metadata["parents"][0].as_str().map_or(drive.root.as_str(), |parent| drive.resolve(parent));
    match drive.items.get(parent) {
        Some(folder) if folder.mime == FOLDER => Ok(parent.to_owned()),
        _ => Err(not_found(parent)),
    }
}

/// Makes a file from the metadata (and content, if uploaded); its id.
fn create(
    drive: &mut Drive,
    metadata: &Value,
    content: Option<Vec<u8>>,
    media_type: Option<&str>,
) -> Result<String, Refusal> {
    let parent = parent_of(drive, metadata)?;
    let modified = modified_time(metadata)?;
    let mime = metadata["mimeType"].as_str().or(media_type).unwrap_or("application/octet-stream");
    // Drive would convert an upload to a Google type; nothing here needs that.
    let content = match (content, mime.starts_with(GOOGLE_TYPES)) {
        (Some(_), true) => return Err(invalid(&format!("Uploads as {mime} are not supported here."))),
        (None, false) => Some(Vec::new()),
        (content, _) => content,
    };
    let mut new = item(metadata["name"].as_str().unwrap_or("Untitled"), &parent, mime, content);
    new.modified = modified.unwrap_or(new.modified);
    Ok(drive.add(new))
}

/// Applies the metadata (and new content, if uploaded) to file `id`.
fn update(drive: &mut Drive, id: &str, metadata: &Value, content: Option<Vec<u8>>) -> Result<(), Refusal> {
    let modified = modified_time(metadata)?;
    let item = drive.items.get_mut(id).ok_or_else(|| not_found(id))?;
    if content.is_some() && item.content.is_none() {
        return Err(error(StatusCode::FORBIDDEN, "fileNotWritable", "Only files with binary content can be uploaded."));
    }
    if let Some(name) = metadata["name"].as_str() {
        item.name = name.to_owned();
    }
    // New content is a modification, at the time the client gives or now.
    match (modified, content.is_some()) {
        (Some(modified), _) => item.modified = modified,
        (None, true) => item.modified = now(),
        (None, false) => {}
    }
    if let Some(content) = content {
        item.content = Some(Media::new(content));
    }
    Ok(())
}

/// Creates (no `target`) or replaces a file with uploaded content; its id.
fn write(
    drive: &mut Drive,
    target: Option<&str>,
    metadata: &Value,
    content: Vec<u8>,
    media_type: Option<&str>,
) -> Result<String, Refusal> {
    match target {
        Some(id) => update(drive, id, metadata, Some(content)).map(|()| id.to_owned()),
        None => create(drive, metadata, Some(content), media_type),
    }
}

fn list(drive: &Drive, parameters: &HashMap<String, String>) -> Result<Response, Refusal> {
    let query = parameters.get("q").map_or("", String::as_str);
    let (parent, name) =
        parse_query(query).ok_or_else(|| error(StatusCode::BAD_REQUEST, "invalidQuery", "Invalid Value"))?;
    let parent = drive.resolve(&parent);
    let mut children: Vec<(&String, &Item)> = drive
        .items
        .iter()
        .filter(|(_, item)| {
            item.parent.as_deref() == Some(parent) && name.as_ref().is_none_or(|name| *name == item.name)
        })
        .collect();
    // Stable, and the items come by id: so by name, then id.
    children.sort_by(|(_, a), (_, b)| a.name.cmp(&b.name));
    let size = match parameters.get("pageSize") {
        Some(size) => size.parse::<usize>().map_err(|_| invalid("Invalid value for: pageSize"))?.clamp(1, PAGE),
        None => PAGE,
    };
    let skip = match parameters.get("pageToken").filter(|token| !token.is_empty()) {
        Some(token) => {
            token.strip_prefix("~!!~").and_then(|skip| skip.parse().ok()).ok_or_else(|| invalid("Invalid Value"))?
        }
        None => 0,
    };
    let files: Vec<Value> = children.iter().skip(skip).take(size).map(|(id, item)| resource(id, item)).collect();
    let mut page = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files});
    if skip + size < children.len() {
        page["nextPageToken"] = format!("~!!~{}", skip + size).into();
    }
    Ok(axum::Json(page).into_response())
}

/// The parent and the name, if any, a query asks for: `'<parent>' in parents [and name =
/// '<name>'] and trashed = false`, the only forms a migration sends.
fn parse_query(query: &str) -> Option<(String, Option<String>)> {
    // Words become the pattern, string literals `?` and the list of literals.
    let (mut pattern, mut literals) = (Vec::new(), Vec::new());
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {}
            '=' => pattern.push("=".to_owned()),
            '\'' => {
                let mut literal = String::new();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        '\\' => literal.push(chars.next().filter(|c| matches!(c, '\'' | '\\'))?),
                        c => literal.push(c),
                    }
                }
                pattern.push("?".to_owned());
                literals.push(literal);
            }
            c => {
                let mut word = c.to_string();
                while let Some(c) = chars.next_if(|c| !matches!(c, ' ' | '\t' | '\n' | '=' | '\'')) {
                    word.push(c);
                }
                pattern.push(word);
            }
        }
    }
    let mut literals = literals.into_iter();
    match pattern.join(" ").as_str() {
        "? in parents and trashed = false" => Some((literals.next()?, None)),
        "? in parents and name = ? and trashed = false" => Some((literals.next()?, Some(literals.next()?))),
        _ => None,
    }
}

fn download(drive: &Drive, id: &str, headers: &HeaderMap) -> Result<Response, Refusal> {
    let item = drive.items.get(id).ok_or_else(|| not_found(id))?;
    let Some(media) = &item.content else {
        let message = "Only files with binary content can be downloaded. Use Export with Docs Editors files.";
        return Err(error(StatusCode::FORBIDDEN, "fileNotDownloadable", message));
    };
    let (bytes, length) = (&media.bytes, media.bytes.len());
    let octets = [(header::CONTENT_TYPE, "application/octet-stream".to_owned())];
    let range = text(headers, header::RANGE).and_then(|value| value.strip_prefix("bytes="));
    let span = range.and_then(|range| range.split_once('-')).and_then(|(start, end)| {
        match (start.parse::<usize>().ok(), end.parse::<usize>().ok()) {
            (Some(start), None) if end.is_empty() => Some((start, length)),
            (None, Some(suffix)) if start.is_empty() => Some((length.saturating_sub(suffix), length)),
            (Some(start), Some(end)) => Some((start, length.min(end.saturating_add(1)))),
            _ => None,
        }
    });
    // An unreadable range is ignored, as HTTP says: the whole file.
    let Some((start, end)) = span else { return Ok((octets, bytes.clone()).into_response()) };
    if start >= end {
        let unsatisfiable = [(header::CONTENT_RANGE, format!("bytes */{length}"))];
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, unsatisfiable).into_response());
    }
    let served = [(header::CONTENT_RANGE, format!("bytes {start}-{}/{length}", end - 1))];
    Ok((StatusCode::PARTIAL_CONTENT, octets, served, bytes[start..end].to_vec()).into_response())
}

/// A `uploadType=multipart`, `media` or `resumable` request, creating a file (no `target`) or
/// replacing one's content.
fn upload_media(
    drive: &mut Drive,
    address: SocketAddr,
    target: Option<String>,
    parameters: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let content_type = text(headers, header::CONTENT_TYPE);
    let id = match parameters.get("uploadType").map(String::as_str) {
        Some("multipart") => {
            let malformed = || error(StatusCode::BAD_REQUEST, "badContent", "Malformed multipart body.");
            let (metadata, media_type, content) =
                content_type.and_then(|kind| multipart(kind, body)).ok_or_else(malformed)?;
            write(drive, target.as_deref(), &parse_metadata(&metadata)?, content, media_type.as_deref())?
        }
        Some("media") => write(drive, target.as_deref(), &json!({}), body.to_vec(), content_type)?,
        Some("resumable") => return start_session(drive, address, target, headers, body),
        _ => return Err(invalid("Invalid value for: uploadType")),
    };
    found(drive, &id)
}

/// Starts a resumable session; its URL is in `Location`.
fn start_session(
    drive: &mut Drive,
    address: SocketAddr,
    target: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let metadata = parse_metadata(body)?;
    // What the upload would be refused for at its end, Drive refuses before it starts.
    modified_time(&metadata)?;
    match &target {
        Some(id) if drive.items.get(id).is_none_or(|item| item.content.is_none()) => return Err(not_found(id)),
        Some(_) => {}
        None => drop(parent_of(drive, &metadata)?),
    }
    let total = text(headers, "x-upload-content-length")
        .map(|total| total.parse().map_err(|_| invalid("Invalid value for: X-Upload-Content-Length")))
        .transpose()?;
    let media_type = text(headers, "x-upload-content-type").map(str::to_owned);
    drive.next_id += 1;
    let upload = fresh_id(drive.next_id);
    let file = target.as_ref().map_or(String::new(), |id| format!("/{id}"));
    let location = format!("http://{address}/upload/drive/v3/files{file}?uploadType=resumable&upload_id={upload}");
    let session = Session { target, metadata, media_type, received: Vec::new(), total, finished: None };
    drive.sessions.insert(upload, session);
    Ok(([(header::LOCATION, location)], StatusCode::OK).into_response())
}

/// The metadata part, the media part's type and the media of a `multipart/related` body.
fn multipart(content_type: &str, body: &[u8]) -> Option<(Vec<u8>, Option<String>, Vec<u8>)> {
    let (kind, parameters) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    let boundary = parameters.split(';').find_map(|parameter| {
        let (key, value) = parameter.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"'))
    })?;
    let find = |from: usize, needle: &[u8]| {
        body.get(from..)?.windows(needle.len()).position(|window| window == needle).map(|at| at + from)
    };
    // The CRLF before a delimiter belongs to it, so a part's content ends just before.
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut at = find(0, &delimiter[2..])? + delimiter.len() - 2;
    let mut parts = Vec::new();
    while !body.get(at..)?.starts_with(b"--") {
        let end = find(at, &delimiter)?;
        // The rest of the delimiter line, headers, a blank line, the content.
        let part = &body[at..end];
        let blank = part.windows(4).position(|window| window == b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..blank]);
        let media_type = headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
        });
        parts.push((media_type, part[blank + 4..].to_vec()));
        at = end + delimiter.len();
    }
    let mut parts = parts.into_iter();
    let ((_, metadata), (media_type, media)) = (parts.next()?, parts.next()?);
    parts.next().is_none().then_some((metadata, media_type, media))
}

/// A request to a resumable session's URL: a chunk, a status query or a cancellation.
fn session(drive: &mut Drive, upload: &str, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(mut session) = drive.sessions.remove(upload) else {
        return *error(StatusCode::NOT_FOUND, "notFound", "No such upload session.");
    };
    if method == Method::DELETE {
        return StatusCode::NO_CONTENT.into_response();
    }
    let answer = match (&session.finished, method) {
        (Some(id), _) => found(drive, id),
        (None, &Method::PUT | &Method::POST) => match receive(&mut session, headers, body) {
            Ok(true) => {
                let content = std::mem::take(&mut session.received);
                let metadata = &session.metadata;
                match write(drive, session.target.as_deref(), metadata, content, session.media_type.as_deref()) {
                    Ok(id) => {
                        let answer = found(drive, &id);
                        session.finished = Some(id);
                        answer
                    }
                    // What was uploaded has nowhere to go: the session is over.
                    Err(refusal) => return *refusal,
                }
            }
            Ok(false) => Ok(incomplete(&session)),
            Err(refusal) => Err(refusal),
        },
        (None, _) => Err(error(StatusCode::NOT_FOUND, "notFound", "Not Found")),
    };
    drive.sessions.insert(upload.to_owned(), session);
    answer.unwrap_or_else(|refusal| *refusal)
}

/// 308 with what the session holds (no `Range` when nothing).
fn incomplete(session: &Session) -> Response {
    match session.received.len() {
        0 => StatusCode::PERMANENT_REDIRECT.into_response(),
        received => {
            ([(header::RANGE, format!("bytes=0-{}", received - 1))], StatusCode::PERMANENT_REDIRECT).into_response()
        }
    }
}

/// Takes a chunk (or a status query) into the session; whether the upload is now complete.
fn receive(session: &mut Session, headers: &HeaderMap, body: &[u8]) -> Result<bool, Refusal> {
    let unreadable = || error(StatusCode::BAD_REQUEST, "badRequest", "Failed to parse Content-Range header.");
    let length = body.len() as u64;
    let (span, total) = match headers.get(header::CONTENT_RANGE) {
        // Without a range, the body is the whole content.
        None => ((length > 0).then(|| (0, length - 1)), Some(length)),
        Some(value) => value.to_str().ok().and_then(content_range).ok_or_else(unreadable)?,
    };
    if let (Some(total), Some(known)) = (total, session.total)
        && total != known
    {
        return Err(unreadable());
    }
    let (received, total) = (session.received.len() as u64, total.or(session.total));
    let Some((start, end)) = span else {
        if length > 0 {
            return Err(unreadable());
        }
        session.total = total;
        return Ok(total == Some(received));
    };
    if (end - start).checked_add(1) != Some(length) || total.is_some_and(|total| end >= total) {
        return Err(unreadable());
    }
    if start != received {
        return Err(incomplete(session).into());
    }
    let last = total.is_some_and(|total| end + 1 == total);
    if !last && !body.len().is_multiple_of(CHUNK) {
        let message = "Invalid request. Chunks but the last must be a multiple of 256 KiB (262144 bytes).";
        return Err(error(StatusCode::BAD_REQUEST, "badRequest", message));
    }
    session.received.extend_from_slice(body);
    session.total = total;
    Ok(last)
}

/// A chunk's first and last byte; `None` for a status query, which carries none.
type Span = Option<(u64, u64)>;

/// `bytes <start>-<end>/<total>` or `bytes */<total>`; `*` for a total not yet known.
fn content_range(value: &str) -> Option<(Span, Option<u64>)> {
    let (span, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    if span == "*" {
        return Some((None, total));
    }
    let (start, end) = span.split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((Some((start, end)), total))
}

/// Now, in Drive's form.
fn now() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_time(i64::try_from(since.as_millis()).unwrap_or(0))
}

/// Milliseconds since the epoch as RFC 3339 in UTC with milliseconds, as Drive writes times.
fn format_time(millis: i64) -> String {
    let (days, millis) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z", millis % 1000)
}

/// An RFC 3339 time as milliseconds since the epoch; digits past milliseconds are dropped, as
/// Drive keeps no more.
fn parse_time(text: &str) -> Option<i64> {
    let number = |from: usize, to: usize| -> Option<i64> {
        text.get(from..to).filter(|digits| digits.bytes().all(|c| c.is_ascii_digit()))?.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    let bytes = text.as_bytes();
    if separators.iter().any(|&(at, c)| bytes.get(at) != Some(&c)) || !matches!(bytes.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        millis = format!("{:0<3}", fraction.get(..digits.min(3)).filter(|kept| !kept.is_empty())?).parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (hours, minutes) = rest.get(1..)?.split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?)
        }
    };
    // Howard Hinnant's `days_from_civil`.
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (shifted_year.div_euclid(400), shifted_year.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year - 719_468;
    Some((((days * 24 + hour) * 60 + minute - offset) * 60 + second) * 1000 + millis)
}
