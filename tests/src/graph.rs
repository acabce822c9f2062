//! A stand-in for the part of Microsoft Graph a OneDrive migration uses, built from its
//! documented requests and answers: items addressed by path (`root:/a/b.txt`), children in
//! pages linked by `@odata.nextLink`, downloads redirected to a pre-authorized URL (with
//! ranges), uploads in one request or in an upload session of `Content-Range` fragments,
//! deletes. Requests need a bearer token; the test can make the next ones answer 401 or 429
//! with `Retry-After`, and can read and change what the drive holds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Children per page, small so that paging is exercised.
const PAGE: usize = 25;

#[derive(Default)]
struct Drive {
    files: BTreeMap<String, Vec<u8>>,
    /// `fileSystemInfo.lastModifiedDateTime` a client set, by path.
    modified: HashMap<String, String>,
    /// An upload session: its path, the time its item names, what arrived.
    sessions: HashMap<String, (String, Option<String>, Vec<u8>)>,
    reject: u32,
    throttle: u32,
    rejected: u32,
    throttled: u32,
    next_session: u32,
}

/// A running stand-in; it stops when dropped.
pub struct GraphStandIn {
    /// Where it listens.
    pub address: SocketAddr,
    drive: Arc<Mutex<Drive>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Shared = (Arc<Mutex<Drive>>, SocketAddr);

impl GraphStandIn {
    /// Starts one on a free loopback port, on a thread of its own (so async tests can
    /// start one too).
    pub fn start() -> Self {
        let drive = Arc::new(Mutex::new(Drive::default()));
        let shared = drive.clone();
        let (address, stop) = crate::serve_on_own_thread("Graph", move |address| {
            // Fragments of up to 60 MiB, as Graph takes.
            axum::Router::new()
                .fallback(handle)
                .layer(axum::extract::DefaultBodyLimit::max(60 << 20))
                .with_state((shared, address))
        });
        Self { address, drive, _stop: stop }
    }

    /// The API root a binding names (`apiEndpoint`).
    pub fn api_endpoint(&self) -> String {
        format!("http://{}/v1.0", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Drive) -> T) -> T {
        f(&mut self.drive.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every file (path without a leading `/`) and its content.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|drive| drive.files.clone())
    }

    /// Puts a file, as another client of the drive would.
    pub fn put(&self, path: &str, content: &[u8]) {
        self.with(|drive| drive.files.insert(path.to_owned(), content.to_vec()));
    }

    /// Makes the next `count` API requests answer 401.
    pub fn reject_next(&self, count: u32) {
        self.with(|drive| drive.reject = count);
    }

    /// Makes the next `count` API requests answer 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, count: u32) {
        self.with(|drive| drive.throttle = count);
    }

    /// How many upload sessions are open (started, neither finished nor cancelled).
    pub fn open_sessions(&self) -> usize {
        self.with(|drive| drive.sessions.len())
    }

    /// How many requests were answered 401 and 429.
    pub fn refusals(&self) -> (u32, u32) {
        self.with(|drive| (drive.rejected, drive.throttled))
    }
}

fn decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

fn encode(path: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
    percent_encoding::utf8_percent_encode(path, SET).to_string()
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": {"code": code, "message": code}}))).into_response()
}

/// A file's item, with the QuickXorHash Graph reports (base64) and the modification time a
/// client set, if any.
fn file_item(path: &str, content: &[u8], modified: Option<&String>) -> serde_json::Value {
    use base64::Engine;
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut hash = quickxorhash::QuickXorHash::new();
    hash.update(content);
    let hash = base64::engine::general_purpose::STANDARD.encode(hash.finalize());
    let changed = "2026-01-01T00:00:00Z";
    serde_json::json!({
        "name": name,
        "size": content.len(),
        "lastModifiedDateTime": changed,
        "fileSystemInfo": {"lastModifiedDateTime": modified.map_or(changed, String::as_str)},
        "file": {"hashes": {"quickXorHash": hash}},
    })
}

fn folder_item(path: &str) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    serde_json::json!({"name": if name.is_empty() { "root" } else { name }, "size": 0, "folder": {"childCount": 0}})
}

/// The direct children of `folder` (`""` for the root), or `None` if it does not exist.
fn children(drive: &Drive, folder: &str) -> Option<Vec<serde_json::Value>> {
    let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
    let mut items = BTreeMap::new();
    for (path, content) in drive.files.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else { break };
        match rest.split_once('/') {
            Some((child, _)) => {
                items.entry(child.to_owned()).or_insert_with(|| folder_item(&format!("{prefix}{child}")))
            }
            None => items.entry(rest.to_owned()).or_insert_with(|| file_item(path, content, drive.modified.get(path))),
        };
    }
    (folder.is_empty() || !items.is_empty()).then(|| items.into_values().collect())
}

async fn handle(
    State((drive, address)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let mut drive = drive.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(encoded) = path.strip_prefix("/download/") {
        return download(&drive, &decode(encoded), &headers);
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        if method == Method::DELETE {
            return match drive.sessions.remove(id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => error(StatusCode::NOT_FOUND, "itemNotFound"),
            };
        }
        return fragment(&mut drive, id, &headers, body);
    }
    let Some(item) = path.strip_prefix("/v1.0/me/drive/") else {
        return error(StatusCode::NOT_FOUND, "invalidRequest");
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.len() > "Bearer ".len() && value.starts_with("Bearer "));
    if !authorized || drive.reject > 0 {
        drive.reject = drive.reject.saturating_sub(1);
        drive.rejected += 1;
        return error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");
    }
    if drive.throttle > 0 {
        drive.throttle -= 1;
        drive.throttled += 1;
        return ([(header::RETRY_AFTER, "1")], error(StatusCode::TOO_MANY_REQUESTS, "activityLimitReached"))
            .into_response();
    }
    let (target, suffix) = match item {
        "root" => (String::new(), ""),
        "root/children" => (String::new(), "children"),
        _ => match item.strip_prefix("root:/") {
            Some(rest) => match rest.rsplit_once(":/") {
                Some((target, suffix)) => (decode(target), suffix),
                None => (decode(rest.trim_end_matches(':')), ""),
            },
            None => return error(StatusCode::BAD_REQUEST, "invalidRequest"),
        },
    };
    match (method, suffix) {
        (Method::GET, "children") => {
            let Some(items) = children(&drive, &target) else { return error(StatusCode::NOT_FOUND, "itemNotFound") };
            let skip: usize =
                uri.query().and_then(|q| q.split("$skiptoken=").nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut page = serde_json::json!({"value": items.iter().skip(skip).take(PAGE).collect::<Vec<_>>()});
            if skip + PAGE < items.len() {
                let base = if target.is_empty() {
                    "root/children".to_owned()
                } else {
                    format!("root:/{}:/children", encode(&target))
                };
                page["@odata.nextLink"] =
                    format!("http://{address}/v1.0/me/drive/{base}?$skiptoken={}", skip + PAGE).into();
            }
            axum::Json(page).into_response()
        }
        (Method::GET, "content") => match drive.files.contains_key(&target) {
            true => (StatusCode::FOUND, [(header::LOCATION, format!("http://{address}/download/{}", encode(&target)))])
                .into_response(),
            false => error(StatusCode::NOT_FOUND, "itemNotFound"),
        },
        (Method::PUT, "content") => {
            drive.files.insert(target.clone(), body.to_vec());
            drive.modified.remove(&target);
            (StatusCode::CREATED, axum::Json(file_item(&target, &body, None))).into_response()
        }
        (Method::POST, "createUploadSession") => {
            drive.next_session += 1;
            let id = drive.next_session.to_string();
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let modified = request["item"]["fileSystemInfo"]["lastModifiedDateTime"].as_str().map(str::to_owned);
            drive.sessions.insert(id.clone(), (target, modified, Vec::new()));
            axum::Json(serde_json::json!({"uploadUrl": format!("http://{address}/upload/{id}")})).into_response()
        }
        (Method::GET, "") => match (drive.files.get(&target), children(&drive, &target)) {
            (Some(content), _) => axum::Json(file_item(&target, content, drive.modified.get(&target))).into_response(),
            (None, Some(_)) => axum::Json(folder_item(&target)).into_response(),
            (None, None) => error(StatusCode::NOT_FOUND, "itemNotFound"),
        },
        (Method::PATCH, "") => {
            let Some(content) = drive.files.get(&target).cloned() else {
                return error(StatusCode::NOT_FOUND, "itemNotFound");
            };
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(modified) = request["fileSystemInfo"]["lastModifiedDateTime"].as_str() {
                drive.modified.insert(target.clone(), modified.to_owned());
            }
            axum::Json(file_item(&target, &content, drive.modified.get(&target))).into_response()
        }
        (Method::DELETE, "") => {
            let prefix = format!("{target}/");
            let before = drive.files.len();
            drive.files.retain(|path, _| path != &target && !path.starts_with(&prefix));
            if drive.files.len() == before {
                error(StatusCode::NOT_FOUND, "itemNotFound")
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => error(StatusCode::BAD_REQUEST, "invalidRequest"),
    }
}

fn download(drive: &Drive, path: &str, headers: &HeaderMap) -> Response {
    let Some(content) = drive.files.get(path) else { return error(StatusCode::NOT_FOUND, "itemNotFound") };
    let range =
        headers.get(header::RANGE).and_then(|value| value.to_str().ok()).and_then(|value| value.strip_prefix("bytes="));
    let Some((start, end)) = range.and_then(|range| range.split_once('-')) else {
        return content.clone().into_response();
    };
    let start: usize = start.parse().unwrap_or(0);
    let end: usize = end.parse().map(|end: usize| end + 1).unwrap_or(content.len()).min(content.len());
    (StatusCode::PARTIAL_CONTENT, content[start.min(end)..end].to_vec()).into_response()
}

fn fragment(drive: &mut Drive, id: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let range = headers.get(header::CONTENT_RANGE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let parsed = range.strip_prefix("bytes ").and_then(|rest| {
        let (span, total) = rest.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        Some((start.parse::<u64>().ok()?, end.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
    });
    let Some((start, end, total)) = parsed else { return error(StatusCode::BAD_REQUEST, "invalidRange") };
    let Some((target, _, received)) = drive.sessions.get_mut(id) else {
        return error(StatusCode::NOT_FOUND, "itemNotFound");
    };
    if start != received.len() as u64 || end + 1 - start != body.len() as u64 || end >= total {
        return error(StatusCode::RANGE_NOT_SATISFIABLE, "invalidRange");
    }
    // Fragments must be multiples of 320 KiB, but for the last.
    if end + 1 < total && !body.len().is_multiple_of(320 * 1024) {
        return error(StatusCode::BAD_REQUEST, "invalidRange");
    }
    received.extend_from_slice(&body);
    if (received.len() as u64) < total {
        return (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"nextExpectedRanges": [format!("{}-", received.len())]})),
        )
            .into_response();
    }
    let target = target.clone();
    let Some((_, modified, content)) = drive.sessions.remove(id) else {
        return error(StatusCode::NOT_FOUND, "itemNotFound");
    };
    match modified {
        Some(modified) => drive.modified.insert(target.clone(), modified),
        None => drive.modified.remove(&target),
    };
    let item = file_item(&target, &content, drive.modified.get(&target));
    drive.files.insert(target, content);
    (StatusCode::CREATED, axum::Json(item)).into_response()
}
