//! An in-memory Kubernetes API server behind `tower-test`'s mock service: enough of GET,
//! LIST (label selectors), server-side apply, merge and JSON patches, DELETE (single and
//! collection, honouring finalizers) and POST for the controllers under test, and watches
//! that stay silent, so a real `Controller` runs from its initial list. Tests read
//! and change its objects directly, as a kubelet or a user would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Key = (String, String, String);

/// The fake cluster's state, shared between the server task and the test.
#[derive(Clone, Default)]
pub struct FakeCluster {
    objects: Arc<Mutex<BTreeMap<Key, Value>>>,
    events: Arc<Mutex<Vec<Value>>>,
    counter: Arc<Mutex<u64>>,
    /// Every `(resource[/subresource], verb)` a client asked for, as RBAC names them.
    access: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// Where a request points.
struct Target {
    resource: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
    selector: Option<String>,
}

fn parse(uri: &http::Uri) -> Target {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let at = segments.iter().position(|s| *s == "namespaces").expect("namespaced requests only");
    let selector = uri
        .query()
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("labelSelector=")).map(percent_decode));
    Target {
        namespace: segments[at + 1].to_owned(),
        resource: segments[at + 2].to_owned(),
        name: segments.get(at + 3).map(|s| (*s).to_owned()),
        subresource: segments.get(at + 4).map(|s| (*s).to_owned()),
        selector,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn matches(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            labels[key].as_str() != Some(value)
        } else if let Some((key, value)) = term.split_once('=') {
            labels[key].as_str() == Some(value.trim_start_matches('='))
        } else {
            !labels[term].is_null()
        }
    })
}

fn status(code: StatusCode, message: &str) -> (StatusCode, Value) {
    let reason = if code == StatusCode::NOT_FOUND { "NotFound" } else { "Invalid" };
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

impl FakeCluster {
    /// Starts serving the mock's requests; returns the client and the cluster.
    pub fn start() -> (kube::Client, FakeCluster) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = FakeCluster::default();
        let server = cluster.clone();
        tokio::spawn(async move {
            let mut watches = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let applying = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|value| value.as_bytes().starts_with(b"application/apply-patch"));
                server.record(request.method(), request.uri(), applying);
                if request.uri().query().is_some_and(|query| query.split('&').any(|pair| pair == "watch=true")) {
                    // A watch that never reports a change (its response never starts):
                    // controllers run from their initial list and their requeues.
                    watches.push(send);
                    continue;
                }
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let (code, value) = server.handle(&parts.method, &parts.uri, &content_type, &bytes);
                let response =
                    Response::builder().status(code).body(Body::from(serde_json::to_vec(&value).unwrap())).unwrap();
                send.send_response(response);
            }
        });
        (kube::Client::new(service, "default"), cluster)
    }

    /// Every `(resource, verb)` asked for so far, as an RBAC rule names them.
    pub fn access(&self) -> BTreeSet<(String, String)> {
        self.access.lock().unwrap().clone()
    }

    /// Records a request as RBAC authorizes it: a server-side apply that creates its object is
    /// authorized as `create` too, as the Kubernetes API server does.
    fn record(&self, method: &http::Method, uri: &http::Uri, applying: bool) {
        let target = parse(uri);
        if applying && let Some(name) = &target.name {
            let key = (target.resource.clone(), target.namespace.clone(), name.clone());
            if !self.objects.lock().unwrap().contains_key(&key) {
                self.access.lock().unwrap().insert((target.resource.clone(), "create".to_owned()));
            }
        }
        let watch = uri.query().is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
        let verb = match (method.as_str(), target.name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (other, _) => other,
        };
        let resource = match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.resource),
            None => target.resource.clone(),
        };
        self.access.lock().unwrap().insert((resource, verb.to_owned()));
    }

    fn next_number(&self) -> u64 {
        let mut counter = self.counter.lock().unwrap();
        *counter += 1;
        *counter
    }

    fn handle(&self, method: &http::Method, uri: &http::Uri, content_type: &str, body: &[u8]) -> (StatusCode, Value) {
        let target = parse(uri);
        let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap() };
        if target.resource == "events" {
            self.events.lock().unwrap().push(body.clone());
            return (StatusCode::CREATED, body);
        }
        let mut objects = self.objects.lock().unwrap();
        let key = |name: &str| (target.resource.clone(), target.namespace.clone(), name.to_owned());
        match (method.as_str(), &target.name) {
            ("GET", Some(name)) => match objects.get(&key(name)) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => status(StatusCode::NOT_FOUND, &format!("{} {name} not found", target.resource)),
            },
            ("GET", None) => {
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|((resource, namespace, _), object)| {
                        *resource == target.resource
                            && *namespace == target.namespace
                            && matches(object, target.selector.as_deref())
                    })
                    .map(|(_, object)| object.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("PATCH", Some(name)) => {
                let existing = objects.get(&key(name)).cloned();
                let mut object = match (existing, content_type) {
                    (Some(object), _) => object,
                    (None, "application/apply-patch+yaml") => {
                        let mut created = body.clone();
                        created["metadata"]["uid"] = json!(format!("uid-{}", self.next_number()));
                        created["metadata"]["creationTimestamp"] = json!("2026-11-24T00:00:00Z");
                        created
                    }
                    (None, _) => {
                        return status(StatusCode::NOT_FOUND, &format!("{} {name} not found", target.resource));
                    }
                };
                match content_type {
                    "application/json-patch+json" => {
                        // The API server treats an absent list as null, which kube's finalizer tests for.
                        if object["metadata"].get("finalizers").is_none() {
                            object["metadata"]["finalizers"] = Value::Null;
                        }
                        let operations: json_patch::Patch = serde_json::from_value(body).unwrap();
                        if let Err(error) = json_patch::patch(&mut object, &operations) {
                            return status(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string());
                        }
                    }
                    _ if target.subresource.as_deref() == Some("status") => {
                        json_patch::merge(&mut object, &json!({"status": body["status"].clone()}));
                    }
                    _ => json_patch::merge(&mut object, &body),
                }
                object["metadata"]["resourceVersion"] = json!(self.next_number().to_string());
                let deleting = !object["metadata"]["deletionTimestamp"].is_null();
                let finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                if deleting && !finalizers {
                    objects.remove(&key(name));
                } else {
                    objects.insert(key(name), object.clone());
                }
                (StatusCode::OK, object)
            }
            ("DELETE", Some(name)) => self.delete(&mut objects, key(name)),
            ("DELETE", None) => {
                let doomed: Vec<Key> = objects
                    .iter()
                    .filter(|((resource, namespace, _), object)| {
                        *resource == target.resource
                            && *namespace == target.namespace
                            && matches(object, target.selector.as_deref())
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in doomed {
                    self.delete(&mut objects, key);
                }
                (StatusCode::OK, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}))
            }
            (other, _) => status(StatusCode::METHOD_NOT_ALLOWED, other),
        }
    }

    fn delete(&self, objects: &mut BTreeMap<Key, Value>, key: Key) -> (StatusCode, Value) {
        let Some(object) = objects.get_mut(&key) else { return status(StatusCode::NOT_FOUND, "not found") };
        if object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
            object["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
            return (StatusCode::OK, object.clone());
        }
        let removed = objects.remove(&key).unwrap();
        (StatusCode::OK, removed)
    }

    /// Stores an object as a user's `kubectl apply` would (with a UID and generation 1).
    pub fn insert(&self, resource: &str, mut object: Value) {
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}", self.next_number()));
        }
        if object["metadata"]["generation"].is_null() {
            object["metadata"]["generation"] = json!(1);
        }
        self.objects.lock().unwrap().insert((resource.to_owned(), namespace, name), object);
    }

    /// An object, if present.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(&(resource.to_owned(), namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Changes an object in place (a kubelet updating a pod, a user editing a spec).
    pub fn update(&self, resource: &str, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.lock().unwrap();
        let object = objects.get_mut(&(resource.to_owned(), namespace.to_owned(), name.to_owned())).unwrap();
        change(object);
    }

    /// Names of the objects of one kind in a namespace.
    pub fn names(&self, resource: &str, namespace: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(r, n, _)| r == resource && n == namespace)
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// The reasons of the events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events.lock().unwrap().iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)).collect()
    }

    /// The events published so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}
