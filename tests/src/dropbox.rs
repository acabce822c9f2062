//! A stand-in for the part of the Dropbox API v2 a migration uses, built from its documented
//! requests and answers: RPC endpoints taking JSON (`get_metadata`, `list_folder` in pages
//! linked by cursors, `delete_v2`) and content endpoints taking header-safe JSON in
//! `Dropbox-API-Arg` (downloads with ranges, uploads in one request or in an upload session
//! checked by offset). Paths are case-insensitive and case-preserving; files carry Dropbox's
//! `content_hash`. Requests need a bearer token; the test can make the next ones answer 401
//! or 429 with `Retry-After`, and can read and change what the account holds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Entries per listing page, small so that paging is exercised.
const PAGE: usize = 25;
/// The most one upload request may carry, as Dropbox documents.
const PAYLOAD: usize = 150 << 20;
/// The block size of `content_hash`.
const BLOCK: usize = 4 << 20;
/// `server_modified` of every file, and `client_modified` when its writer gave none.
const EPOCH: &str = "2026-01-01T00:00:00Z";

struct File {
    /// The path as first written, without a leading `/`.
    display: String,
    content: Vec<u8>,
    /// Computed once, as every answer about the file carries it.
    content_hash: String,
    client_modified: String,
    rev: String,
}

/// A listing being paged: every entry, where the next page starts, and the page size.
type Listing = (Arc<Vec<Value>>, usize, usize);

/// An error answer, boxed to keep `Result`s small.
type Refusal = Box<Response>;
/// A handler's answer; `Err` is a refusal, so that checks can use `?`.
type Answer = Result<Response, Refusal>;

#[derive(Default)]
struct Account {
    /// Files by lowercased path without a leading `/`; a folder exists while a file lies
    /// beneath it.
    files: BTreeMap<String, File>,
    /// Upload sessions by id: what arrived.
    sessions: HashMap<String, Vec<u8>>,
    cursors: HashMap<String, Listing>,
    /// Numbers revisions, sessions and cursors, so that each is new.
    serial: u64,
    reject: u32,
    throttle: u32,
    rejected: u32,
    throttled: u32,
    largest: usize,
}

/// A running stand-in; it stops when dropped.
pub struct DropboxStandIn {
    /// Where it listens.
    pub address: SocketAddr,
    account: Arc<Mutex<Account>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl DropboxStandIn {
    /// Starts one on a free loopback port, on a thread of its own (so async tests can
    /// start one too).
    pub fn start() -> Self {
        let account = Arc::new(Mutex::new(Account::default()));
        let shared = account.clone();
        let (address, stop) = crate::serve_on_own_thread("Dropbox", move |_| {
            // Above Dropbox's 150 MiB, so that its own refusal (`payload_too_large`) is heard.
            axum::Router::new()
                .fallback(handle)
                .layer(axum::extract::DefaultBodyLimit::max(160 << 20))
                .with_state(shared)
        });
        Self { address, account, _stop: stop }
    }

    /// The address a binding names; RPC and content requests both go under it (Dropbox
    /// splits them between `api.dropboxapi.com` and `content.dropboxapi.com`).
    pub fn api_endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every file (its display path, without a leading `/`) and its content.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|account| account.files.values().map(|file| (file.display.clone(), file.content.clone())).collect())
    }

    /// Puts a file (path without a leading `/`), as another client of the account would.
    pub fn put(&self, path: &str, content: &[u8]) {
        self.with(|account| {
            if let Err((summary, _)) = check_write(account, path) {
                panic!("Dropbox would not write {path:?}: {summary}");
            }
            store(account, path, content.to_vec(), None);
        });
    }

    /// The `client_modified` of the file at `path` (without a leading `/`, in any case).
    pub fn modified(&self, path: &str) -> Option<String> {
        self.with(|account| account.files.get(&path.to_lowercase()).map(|file| file.client_modified.clone()))
    }

    /// Makes the next `count` API requests answer 401 `expired_access_token`.
    pub fn reject_next(&self, count: u32) {
        self.with(|account| account.reject = count);
    }

    /// Makes the next `count` API requests answer 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, count: u32) {
        self.with(|account| account.throttle = count);
    }

    /// How many requests were answered 401 and 429.
    pub fn refusals(&self) -> (u32, u32) {
        self.with(|account| (account.rejected, account.throttled))
    }

    /// How many upload sessions are open (started and not finished).
    pub fn open_sessions(&self) -> usize {
        self.with(|account| account.sessions.len())
    }

    /// The largest request body seen, in bytes (to check how uploads are cut).
    pub fn largest_request(&self) -> usize {
        self.with(|account| account.largest)
    }
}

/// Dropbox's `content_hash`: the SHA-256 of the SHA-256s of the 4 MiB blocks, in hex.
fn content_hash(content: &[u8]) -> String {
    let mut hash = Sha256::new();
    for block in content.chunks(BLOCK) {
        hash.update(Sha256::digest(block));
    }
    hex::encode(hash.finalize())
}

/// A stable id for the item at a lowercased path.
fn id(lower: &str) -> String {
    format!("id:{}", &hex::encode(Sha256::digest(lower.as_bytes()))[..22])
}

fn name(display: &str) -> &str {
    display.rsplit('/').next().unwrap_or(display)
}

fn folder_metadata(lower: &str, display: &str) -> Value {
    let (path_lower, path_display) = (format!("/{lower}"), format!("/{display}"));
    let (name, id) = (name(display), id(lower));
    json!({".tag": "folder", "name": name, "path_lower": path_lower, "path_display": path_display, "id": id})
}

fn file_metadata(lower: &str, file: &File) -> Value {
    let mut metadata = folder_metadata(lower, &file.display);
    metadata[".tag"] = "file".into();
    metadata["client_modified"] = file.client_modified.clone().into();
    metadata["server_modified"] = EPOCH.into();
    metadata["rev"] = file.rev.clone().into();
    metadata["size"] = file.content.len().into();
    metadata["content_hash"] = file.content_hash.clone().into();
    metadata
}

/// The display path of the folder at `lower` (not the root), if a file lies beneath it.
fn folder_display(account: &Account, lower: &str) -> Option<String> {
    let prefix = format!("{lower}/");
    let (_, file) = account.files.range(prefix.clone()..).next().filter(|(path, _)| path.starts_with(&prefix))?;
    Some(file.display.split('/').take(lower.split('/').count()).collect::<Vec<_>>().join("/"))
}

/// The metadata of the file or folder at `lower`, if there is one.
fn lookup(account: &Account, lower: &str) -> Option<Value> {
    match account.files.get(lower) {
        Some(file) => Some(file_metadata(lower, file)),
        None => folder_display(account, lower).map(|display| folder_metadata(lower, &display)),
    }
}

/// Why Dropbox would not write a file at `path` (no leading `/`): the summary and value of
/// its `WriteError`.
fn check_write(account: &Account, path: &str) -> Result<(), (String, Value)> {
    let conflict =
        |kind: &str| Err((format!("conflict/{kind}"), json!({".tag": "conflict", "conflict": {".tag": kind}})));
    let malformed =
        |name: &str| name.is_empty() || name == "." || name == ".." || name.contains('\\') || name.ends_with(' ');
    if path.split('/').any(malformed) {
        return Err(("malformed_path".to_owned(), json!({".tag": "malformed_path"})));
    }
    let lower = path.to_lowercase();
    if folder_display(account, &lower).is_some() {
        return conflict("folder");
    }
    match lower.match_indices('/').any(|(end, _)| account.files.contains_key(&lower[..end])) {
        true => conflict("file_ancestor"),
        false => Ok(()),
    }
}

/// Writes a file `check_write` allowed and returns its metadata. The file keeps the casing
/// of the one it replaces, or takes that of the folders it goes into, as Dropbox does.
fn store(account: &mut Account, path: &str, content: Vec<u8>, modified: Option<String>) -> Value {
    let lower = path.to_lowercase();
    let display = match account.files.get(&lower) {
        Some(file) => file.display.clone(),
        None => {
            let (names, lowers): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), lower.split('/').collect());
            (1..names.len())
                .rev()
                .find_map(|depth| {
                    let folder = folder_display(account, &lowers[..depth].join("/"))?;
                    Some(format!("{folder}/{}", names[depth..].join("/")))
                })
                .unwrap_or_else(|| path.to_owned())
        }
    };
    account.serial += 1;
    let client_modified = modified.unwrap_or_else(|| EPOCH.to_owned());
    let (content_hash, rev) = (content_hash(&content), format!("{:09x}", account.serial));
    let file = File { display, content, content_hash, client_modified, rev };
    let metadata = file_metadata(&lower, &file);
    account.files.insert(lower, file);
    metadata
}

/// A 400, which Dropbox words in plain text.
fn bad_request(why: &str) -> Refusal {
    let text = format!("Error in call to API function: {why}");
    Box::new((StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// A 409 with the error's summary and value, as Dropbox answers an endpoint's own errors.
fn refuse(summary: &str, error: Value) -> Refusal {
    let body = json!({"error_summary": format!("{summary}/.."), "error": error});
    Box::new((StatusCode::CONFLICT, axum::Json(body)).into_response())
}

/// A `LookupError` (`not_found`, `not_folder`, `not_file`) under the endpoint's `tag`.
fn lookup_failed(tag: &str, reason: &str) -> Refusal {
    refuse(&format!("{tag}/{reason}"), json!({".tag": tag, tag: {".tag": reason}}))
}

/// The `path` argument without its leading `/` (`""` for the root, where `root` allows it).
fn path_argument(args: &Value, root: bool) -> Result<&str, Refusal> {
    match args["path"].as_str() {
        Some("") if root => Ok(""),
        Some("/") => Err(bad_request("path: specify the root folder as an empty string rather than as \"/\"")),
        Some(path) => path.strip_prefix('/').ok_or_else(|| bad_request(&format!("path: {path:?} must start with /"))),
        None => Err(bad_request("path: missing")),
    }
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    let value = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    value.split(';').next().is_some_and(|kind| kind.trim().eq_ignore_ascii_case(expected))
}

/// The `Dropbox-API-Arg` JSON, which must be header-safe: ASCII, everything else escaped
/// as `\uXXXX` (serde_json decodes the escapes).
fn header_argument(headers: &HeaderMap) -> Result<Value, Refusal> {
    let Some(value) = headers.get("dropbox-api-arg") else { return Err(bad_request("missing Dropbox-API-Arg")) };
    if !value.as_bytes().is_ascii() {
        return Err(bad_request("Dropbox-API-Arg must be ASCII, other characters escaped as \\uXXXX"));
    }
    serde_json::from_slice(value.as_bytes()).map_err(|e| bad_request(&format!("Dropbox-API-Arg: {e}")))
}

/// `json` made header-safe, as Dropbox sends `Dropbox-API-Result`.
fn header_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
            continue;
        }
        for unit in c.encode_utf16(&mut [0; 2]) {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    }
    out
}

async fn handle(
    State(account): State<Arc<Mutex<Account>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut account = account.lock().unwrap_or_else(|e| e.into_inner());
    account.largest = account.largest.max(body.len());
    if method != Method::POST {
        return *bad_request("every endpoint takes POST");
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.len() > "Bearer ".len() && value.starts_with("Bearer "));
    if !authorized || account.reject > 0 {
        account.reject = account.reject.saturating_sub(1);
        account.rejected += 1;
        let error = json!({"error_summary": "expired_access_token/..", "error": {".tag": "expired_access_token"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    if account.throttle > 0 {
        account.throttle -= 1;
        account.throttled += 1;
        let error = json!({
            "error_summary": "too_many_requests/..",
            "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 1},
        });
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], axum::Json(error)).into_response();
    }
    let function = uri.path().strip_prefix("/2/files/").unwrap_or("");
    let answer = match function {
        "get_metadata" | "list_folder" | "list_folder/continue" | "delete_v2" => {
            if !content_type_is(&headers, "application/json") {
                return *bad_request("Bad HTTP \"Content-Type\" header: expecting \"application/json\"");
            }
            match serde_json::from_slice(&body) {
                Ok(args) => rpc(&mut account, function, &args),
                Err(e) => Err(bad_request(&format!("request body: {e}"))),
            }
        }
        "download" | "upload" | "upload_session/start" | "upload_session/append_v2" | "upload_session/finish" => {
            if function != "download" && !content_type_is(&headers, "application/octet-stream") {
                return *bad_request("Bad HTTP \"Content-Type\" header: expecting \"application/octet-stream\"");
            }
            header_argument(&headers).and_then(|args| content(&mut account, function, &args, &headers, &body))
        }
        _ => Err(bad_request(&format!("unknown API function {:?}", uri.path()))),
    };
    answer.unwrap_or_else(|refusal| *refusal)
}

fn rpc(account: &mut Account, function: &str, args: &Value) -> Answer {
    match function {
        "get_metadata" => {
            let path = path_argument(args, false)?.to_lowercase();
            let metadata = lookup(account, &path).ok_or_else(|| lookup_failed("path", "not_found"))?;
            Ok(axum::Json(metadata).into_response())
        }
        "list_folder" => {
            let path = path_argument(args, true)?.to_lowercase();
            let limit = match &args["limit"] {
                Value::Null => PAGE,
                limit => {
                    limit.as_u64().filter(|n| (1..=2000).contains(n)).ok_or_else(|| bad_request("limit: 1 to 2000"))?
                        as usize
                }
            };
            if account.files.contains_key(&path) {
                return Err(lookup_failed("path", "not_folder"));
            }
            let display = match path.is_empty() {
                true => String::new(),
                false => folder_display(account, &path).ok_or_else(|| lookup_failed("path", "not_found"))?,
            };
            let entries = listing(account, &path, &display, args["recursive"].as_bool().unwrap_or(false));
            Ok(page(account, Arc::new(entries), 0, limit.min(PAGE)))
        }
        "list_folder/continue" => {
            let listing = args["cursor"].as_str().and_then(|cursor| account.cursors.get(cursor)).cloned();
            let (entries, start, size) = listing.ok_or_else(|| refuse("reset", json!({".tag": "reset"})))?;
            Ok(page(account, entries, start, size))
        }
        _ => {
            let path = path_argument(args, false)?.to_lowercase();
            let metadata = lookup(account, &path).ok_or_else(|| lookup_failed("path_lookup", "not_found"))?;
            let prefix = format!("{path}/");
            account.files.retain(|key, _| key != &path && !key.starts_with(&prefix));
            Ok(axum::Json(json!({"metadata": metadata})).into_response())
        }
    }
}

/// The entries of the folder at `lower` (`""` for the root): its children or, `recursive`,
/// the folder itself (Dropbox lists it first, unless it is the root) and all beneath it.
fn listing(account: &Account, lower: &str, display: &str, recursive: bool) -> Vec<Value> {
    let (depth, prefix) = match lower.is_empty() {
        true => (0, String::new()),
        false => (lower.split('/').count(), format!("{lower}/")),
    };
    // By lowercased path, so that the order is fixed and a folder comes before its contents.
    let mut entries = BTreeMap::new();
    if recursive && depth > 0 {
        entries.insert(lower.to_owned(), folder_metadata(lower, display));
    }
    for (path, file) in account.files.range(prefix.clone()..) {
        if !path.starts_with(&prefix) {
            break;
        }
        let (lowers, names): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), file.display.split('/').collect());
        let deepest = if recursive { lowers.len() - 1 } else { (depth + 1).min(lowers.len() - 1) };
        for end in depth + 1..=deepest {
            entries
                .entry(lowers[..end].join("/"))
                .or_insert_with_key(|folder| folder_metadata(folder, &names[..end].join("/")));
        }
        if recursive || lowers.len() == depth + 1 {
            entries.insert(path.clone(), file_metadata(path, file));
        }
    }
    entries.into_values().collect()
}

/// One page of a listing from `start`, with a cursor for the next (reusable, so that a
/// client may retry it).
fn page(account: &mut Account, entries: Arc<Vec<Value>>, start: usize, size: usize) -> Response {
    let end = (start + size).min(entries.len());
    account.serial += 1;
    let cursor = format!("cursor-{}", account.serial);
    let page = json!({"entries": &entries[start.min(end)..end], "cursor": cursor, "has_more": end < entries.len()});
    account.cursors.insert(cursor, (entries, end, size));
    axum::Json(page).into_response()
}

/// Where and how an upload commits.
struct Commit {
    path: String,
    modified: Option<String>,
}

/// An upload's `CommitInfo`, checked as Dropbox checks it. Only `overwrite` is modeled:
/// Dropbox's default mode, `add`, would refuse to replace a file.
fn commit(args: &Value) -> Result<Commit, Refusal> {
    let path = path_argument(args, false)?.to_owned();
    let mode = args["mode"].as_str().or_else(|| args["mode"][".tag"].as_str());
    if mode != Some("overwrite") || args["autorename"].as_bool().unwrap_or(false) {
        return Err(bad_request("mode: only \"overwrite\" without autorename is modeled"));
    }
    let modified = match &args["client_modified"] {
        Value::Null => None,
        Value::String(time) if is_timestamp(time) => Some(time.clone()),
        other => return Err(bad_request(&format!("client_modified: {other} is not like 2026-01-01T00:00:00Z"))),
    };
    Ok(Commit { path, modified })
}

/// Whether `time` is in Dropbox's form, `%Y-%m-%dT%H:%M:%SZ` (no fractions of a second).
fn is_timestamp(time: &str) -> bool {
    let form = "0000-00-00T00:00:00Z";
    time.len() == form.len()
        && time.bytes().zip(form.bytes()).all(|(byte, f)| if f == b'0' { byte.is_ascii_digit() } else { byte == f })
}

/// A session request's `cursor`: its session id and offset.
fn session_cursor(args: &Value) -> Result<(String, u64), Refusal> {
    match (args["cursor"]["session_id"].as_str(), args["cursor"]["offset"].as_u64()) {
        (Some(id), Some(offset)) => Ok((id.to_owned(), offset)),
        _ => Err(bad_request("cursor: session_id and offset required")),
    }
}

fn content(account: &mut Account, function: &str, args: &Value, headers: &HeaderMap, body: &Bytes) -> Answer {
    if body.len() > PAYLOAD {
        return Err(refuse("payload_too_large", json!({".tag": "payload_too_large"})));
    }
    match function {
        "download" => download(account, args, headers),
        "upload" => {
            let commit = commit(args)?;
            if let Err((summary, reason)) = check_write(account, &commit.path) {
                // Dropbox keeps the data in a session a retry may finish; this one keeps none.
                account.serial += 1;
                let id = format!("session-{}", account.serial);
                let error = json!({".tag": "path", "reason": reason, "upload_session_id": id});
                return Err(refuse(&format!("path/{summary}"), error));
            }
            Ok(axum::Json(store(account, &commit.path, body.to_vec(), commit.modified)).into_response())
        }
        "upload_session/start" => {
            account.serial += 1;
            let id = format!("session-{}", account.serial);
            account.sessions.insert(id.clone(), body.to_vec());
            Ok(axum::Json(json!({"session_id": id})).into_response())
        }
        "upload_session/append_v2" => {
            let (id, offset) = session_cursor(args)?;
            let Some(session) = account.sessions.get_mut(&id) else {
                return Err(refuse("not_found", json!({".tag": "not_found"})));
            };
            let received = session.len();
            if offset != received as u64 {
                return Err(refuse(
                    "incorrect_offset",
                    json!({".tag": "incorrect_offset", "correct_offset": received}),
                ));
            }
            session.extend_from_slice(body);
            Ok(axum::Json(Value::Null).into_response())
        }
        _ => finish(account, args, body),
    }
}

fn finish(account: &mut Account, args: &Value, body: &Bytes) -> Answer {
    let (id, offset) = session_cursor(args)?;
    let commit = commit(&args["commit"])?;
    let Some(mut session) = account.sessions.remove(&id) else {
        return Err(refuse(
            "lookup_failed/not_found",
            json!({".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}}),
        ));
    };
    let received = session.len();
    if offset != received as u64 {
        account.sessions.insert(id, session);
        let error = json!({".tag": "incorrect_offset", "correct_offset": received});
        return Err(refuse("lookup_failed/incorrect_offset", json!({".tag": "lookup_failed", "lookup_failed": error})));
    }
    // What arrives stays in the session even if the commit fails, so a retry sends no data
    // and the new offset, as Dropbox documents.
    session.extend_from_slice(body);
    if let Err((summary, reason)) = check_write(account, &commit.path) {
        account.sessions.insert(id, session);
        return Err(refuse(&format!("path/{summary}"), json!({".tag": "path", "path": reason})));
    }
    Ok(axum::Json(store(account, &commit.path, session, commit.modified)).into_response())
}

fn download(account: &Account, args: &Value, headers: &HeaderMap) -> Answer {
    let path = path_argument(args, false)?.to_lowercase();
    let Some(file) = account.files.get(&path) else {
        let reason = if folder_display(account, &path).is_some() { "not_file" } else { "not_found" };
        return Err(lookup_failed("path", reason));
    };
    let result = header_safe(&file_metadata(&path, file).to_string());
    let length = file.content.len();
    let kind = ("content-type", "application/octet-stream".to_owned());
    let range =
        headers.get(header::RANGE).and_then(|value| value.to_str().ok()).and_then(|value| value.strip_prefix("bytes="));
    let Some((start, end)) = range.and_then(|range| range.split_once('-')).filter(|_| length > 0) else {
        return Ok(([kind, ("dropbox-api-result", result)], file.content.clone()).into_response());
    };
    let end = end.parse().map(|end: usize| end.saturating_add(1)).unwrap_or(length).min(length);
    let start = start.parse().unwrap_or(0);
    if start >= end {
        let unsatisfiable = [("content-range", format!("bytes */{length}"))];
        return Err(Box::new((StatusCode::RANGE_NOT_SATISFIABLE, unsatisfiable).into_response()));
    }
    let span = ("content-range", format!("bytes {start}-{}/{length}", end - 1));
    let headers = [kind, ("dropbox-api-result", result), span];
    Ok((StatusCode::PARTIAL_CONTENT, headers, file.content[start..end].to_vec()).into_response())
}
