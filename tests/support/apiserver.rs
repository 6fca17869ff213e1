//! An in-process Kubernetes API server, good enough to run the real `kube::runtime::Controller`
//! end to end: objects stored by collection, namespace and name; create, get, list (label
//! selectors), replace, delete; merge patches and Server-Side Apply approximated as a deep
//! merge; the status subresource; resourceVersion and generation bookkeeping; and `?watch=true`
//! streams replayed from a resourceVersion. Used as a tower service by `kube::Client::new`.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone)]
struct Change {
    rv: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Change>,
}

#[derive(Clone)]
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
    changed: Arc<watch::Sender<u64>>,
    /// Requests by "verb collection", for tests that check which calls were made.
    calls: Arc<Mutex<HashMap<String, u64>>>,
    /// Pod ports reachable through port-forward: (namespace, pod, port) → `host:port` of a
    /// process on 127.0.0.1 playing that port of the pod.
    forwards: Arc<Mutex<HashMap<PodPort, String>>>,
}

/// Namespace, pod name, port.
type PodPort = (String, String, u16);

/// The pod side of `pods/{name}/portforward` (the websocket protocol `v4.channel.k8s.io`, as
/// kubectl and kube-rs speak it): channel 0 carries the port's bytes, channel 1 its errors, and
/// each channel's first frame names the port.
async fn port_forward(
    State(server): State<ApiServer>,
    axum::extract::Path((namespace, pod)): axum::extract::Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    *server
        .calls
        .lock()
        .unwrap()
        .entry("create v1/pods/portforward".into())
        .or_default() += 1;
    let Some(port) = query.get("ports").and_then(|p| p.parse::<u16>().ok()) else {
        return status_error(400, "BadRequest", "one port in ?ports= is needed".into());
    };
    let target = server
        .forwards
        .lock()
        .unwrap()
        .get(&(namespace, pod.clone(), port))
        .cloned();
    let Some(target) = target else {
        return status_error(
            404,
            "NotFound",
            format!("pods {pod:?} not found or port {port} not forwardable"),
        );
    };
    upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| bridge(socket, port, target))
}

async fn bridge(socket: axum::extract::ws::WebSocket, port: u16, target: String) {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut sink, mut from_client) = socket.split();
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if sink
            .send(Message::Binary(vec![channel, lo, hi].into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let tcp = match tokio::net::TcpStream::connect(&target).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let mut frame = vec![1u8];
            frame.extend(format!("cannot connect to port {port}: {e}").bytes());
            let _ = sink.send(Message::Binary(frame.into())).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = async move {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(bytes)
                    if bytes.first() == Some(&0)
                        && to_pod.write_all(&bytes[1..]).await.is_err() =>
                {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = from_pod.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buffer[..n]);
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// Where a request points: `collection` is `group/version/plural` (`v1/secrets` for core).
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name.to_string()), None),
        [plural, name, sub] => (plural, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    Some(Target {
        collection: format!("{gv}/{plural}"),
        namespace,
        name,
        status: sub == Some("status"),
    })
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    json_response(StatusCode::from_u16(code).unwrap(), &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// RFC 7386 merge: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Everything but metadata and status: what a change of bumps `metadata.generation`.
/// `metadata.managedFields`, approximated without field sets: one entry per manager and
/// subresource; a forced apply takes the main resource over from every other manager (a real
/// server moves only the conflicting fields, which for the operator's children is all of them).
fn record_manager(obj: &mut Value, target: &Target, how: Write, manager: Option<&str>) {
    let manager = manager.unwrap_or("unknown");
    let subresource = if target.status { "status" } else { "" };
    let operation = if how == Write::Apply {
        "Apply"
    } else {
        "Update"
    };
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let same_place = |e: &Value| e["subresource"].as_str().unwrap_or("") == subresource;
    if how == Write::Apply && !target.status {
        entries.retain(|e| !same_place(e));
    } else {
        entries.retain(|e| !(same_place(e) && e["manager"] == manager));
    }
    let mut entry = json!({"manager": manager, "operation": operation});
    if !subresource.is_empty() {
        entry["subresource"] = subresource.into();
    }
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

fn content(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// What a client asking for `as=PartialObjectMetadata` gets instead of the whole object.
fn partial(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

fn labels_match(obj: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        let actual = obj["metadata"]["labels"][k.trim()].as_str();
        if v.is_empty() && !term.contains('=') {
            actual.is_some()
        } else {
            actual == Some(v.trim())
        }
    })
}

impl ApiServer {
    pub fn new() -> ApiServer {
        ApiServer {
            store: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            calls: Arc::default(),
            forwards: Arc::default(),
        }
    }

    /// Makes `pods/{pod}/portforward?ports={port}` in `namespace` reach `target` (`host:port`
    /// on 127.0.0.1, playing that port of the pod).
    pub fn forward_pod_port(&self, namespace: &str, pod: &str, port: u16, target: &str) {
        self.forwards
            .lock()
            .unwrap()
            .insert((namespace.into(), pod.into(), port), target.into());
    }

    fn router(&self) -> axum::Router {
        axum::Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
                axum::routing::get(port_forward),
            )
            .fallback(handle)
            .with_state(self.clone())
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// Serves over plain HTTP on 127.0.0.1, for a controller running as its own process.
    pub async fn serve(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    /// A client over HTTP to `serve`'s address: what the websocket port-forward needs, which a
    /// client calling the router in process cannot upgrade to.
    pub async fn http_client(&self) -> kube::Client {
        let addr = self.serve().await;
        let mut config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        config.default_namespace = "default".into();
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig that points a real client at `serve`'s address.
    pub fn kubeconfig(addr: std::net::SocketAddr, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: mock\n\
             clusters: [{{name: mock, cluster: {{server: \"http://{addr}\"}}}}]\n\
             users: [{{name: mock, user: {{}}}}]\n\
             contexts: [{{name: mock, context: {{cluster: mock, user: mock, namespace: {namespace}}}}}]\n"
        )
    }

    /// Requests so far by RBAC verb and collection (e.g. `"patch apps/v1/deployments"`); status
    /// subresource calls end in `/status`, metadata-only reads in ` (metadata)`.
    pub fn calls(&self) -> HashMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }

    /// Every stored object of a collection, e.g. `"events.k8s.io/v1/events"`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        let store = self.store.lock().unwrap();
        store
            .objects
            .iter()
            .filter(|((c, _, _), _)| c == collection)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn record(&self, store: &mut Store, kind: &'static str, target: &Target, object: Value) {
        store.log.push(Change {
            rv: store.rv,
            collection: target.collection.clone(),
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            kind,
            object,
        });
        self.changed.send_replace(store.rv);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        target: &Target,
        namespace: &str,
        name: &str,
        body: Value,
        how: Write,
        manager: Option<&str>,
    ) -> Response {
        let mut store = self.store.lock().unwrap();
        let key = (
            target.collection.clone(),
            namespace.to_string(),
            name.to_string(),
        );
        let existing = store.objects.get(&key).cloned();
        let creating = existing.is_none();
        if creating && how == Write::Apply {
            // A real API server authorizes an apply that creates as `create` too.
            *self
                .calls
                .lock()
                .unwrap()
                .entry(format!("create {}", target.collection))
                .or_default() += 1;
        }
        let mut obj = match (&existing, how) {
            (Some(_), Write::Create) => {
                return status_error(409, "AlreadyExists", format!("{name} already exists"));
            }
            (None, Write::Replace | Write::Merge) => {
                return status_error(404, "NotFound", format!("{name} not found"));
            }
            (None, _) => json!({}),
            (Some(old), _) => old.clone(),
        };
        let before = obj.clone();
        if let (Some(wanted), Some(old)) = (body["metadata"]["resourceVersion"].as_str(), &existing)
            && how != Write::Apply
            && old["metadata"]["resourceVersion"].as_str() != Some(wanted)
        {
            return status_error(
                409,
                "Conflict",
                format!("{name}: the object has been modified"),
            );
        }
        if target.status {
            if creating {
                return status_error(404, "NotFound", format!("{name} not found"));
            }
            merge(&mut obj["status"], &body["status"]);
        } else {
            let mut body = body;
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
            match how {
                Write::Replace => {
                    let status = obj.get("status").cloned();
                    let meta = obj["metadata"].clone();
                    obj = body;
                    let m = obj["metadata"].as_object_mut().map(std::mem::take);
                    obj["metadata"] = meta;
                    if let Some(m) = m {
                        merge(&mut obj["metadata"], &Value::Object(m));
                    }
                    if let Some(s) = status {
                        obj["status"] = s;
                    }
                }
                _ => merge(&mut obj, &body),
            }
        }
        record_manager(&mut obj, target, how, manager);
        if !creating && obj == before {
            // Like a real API server: a write that changes nothing keeps the resourceVersion
            // and wakes no watcher.
            return json_response(StatusCode::OK, &obj);
        }
        store.rv += 1;
        let rv = store.rv;
        let meta = &mut obj["metadata"];
        meta["name"] = name.into();
        if !namespace.is_empty() {
            meta["namespace"] = namespace.into();
        }
        meta["resourceVersion"] = rv.to_string().into();
        if creating {
            meta["uid"] = uuid::Uuid::new_v4().to_string().into();
            meta["creationTimestamp"] = chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .into();
            meta["generation"] = 1.into();
        } else if content(&before) != content(&obj) {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = (generation + 1).into();
        }
        let finalized = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if !obj["metadata"]["deletionTimestamp"].is_null() && finalized {
            // The last finalizer is gone: the deletion completes.
            store.objects.remove(&key);
            self.record(&mut store, "DELETED", target, obj.clone());
            return json_response(StatusCode::OK, &obj);
        }
        store.objects.insert(key, obj.clone());
        let kind = if creating { "ADDED" } else { "MODIFIED" };
        self.record(&mut store, kind, target, obj.clone());
        json_response(
            if creating {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &obj,
        )
    }

    fn delete(&self, target: &Target, namespace: &str, name: &str) -> Response {
        let mut store = self.store.lock().unwrap();
        let key = (
            target.collection.clone(),
            namespace.to_string(),
            name.to_string(),
        );
        let finalizers = store
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["finalizers"].as_array())
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            // Like a real API server: marked for deletion, kept until its finalizers are done.
            store.rv += 1;
            let rv = store.rv.to_string();
            let obj = store.objects.get_mut(&key).expect("checked above");
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .into();
            }
            obj["metadata"]["resourceVersion"] = rv.into();
            let obj = obj.clone();
            self.record(&mut store, "MODIFIED", target, obj.clone());
            return json_response(StatusCode::OK, &obj);
        }
        match store.objects.remove(&key) {
            None => status_error(404, "NotFound", format!("{name} not found")),
            Some(mut obj) => {
                store.rv += 1;
                obj["metadata"]["resourceVersion"] = store.rv.to_string().into();
                self.record(&mut store, "DELETED", target, obj.clone());
                json_response(StatusCode::OK, &obj)
            }
        }
    }

    /// A page of `limit` items (all when 0) from the `continue` offset, as a real API server
    /// pages a list for clients that ask (kube's watcher asks for 500 at a time).
    fn list(
        &self,
        target: &Target,
        selector: Option<&str>,
        metadata_only: bool,
        page: (usize, usize),
    ) -> Response {
        let (limit, offset) = page;
        let store = self.store.lock().unwrap();
        let mut matching = store.objects.iter().filter(|((c, ns, _), obj)| {
            *c == target.collection
                && target.namespace.as_ref().is_none_or(|want| want == ns)
                && labels_match(obj, selector)
        });
        let items: Vec<Value> = matching
            .by_ref()
            .skip(offset)
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|(_, v)| if metadata_only { partial(v) } else { v.clone() })
            .collect();
        let more = matching.next().is_some();
        let next = (offset + items.len()).to_string();
        let (api_version, kind) = if metadata_only {
            ("meta.k8s.io/v1", "PartialObjectMetadataList")
        } else {
            ("v1", "List")
        };
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {
                    "resourceVersion": store.rv.to_string(),
                    "continue": if more { next } else { String::new() },
                },
                "items": items,
            }),
        )
    }

    fn watch(
        &self,
        target: Target,
        since: u64,
        selector: Option<String>,
        metadata_only: bool,
    ) -> Response {
        let server = self.clone();
        let stream = futures::stream::unfold(
            (since, server.changed.subscribe()),
            move |(mut seen, mut changed)| {
                let server = server.clone();
                let collection = target.collection.clone();
                let namespace = target.namespace.clone();
                let selector = selector.clone();
                async move {
                    loop {
                        let batch: Vec<Change> = {
                            let store = server.store.lock().unwrap();
                            let start = store.log.partition_point(|c| c.rv <= seen);
                            store.log[start..].to_vec()
                        };
                        let mut out = Vec::new();
                        for change in batch {
                            seen = change.rv;
                            if change.collection == collection
                                && namespace.as_ref().is_none_or(|ns| *ns == change.namespace)
                                && labels_match(&change.object, selector.as_deref())
                            {
                                let object = if metadata_only {
                                    partial(&change.object)
                                } else {
                                    change.object
                                };
                                let line = json!({"type": change.kind, "object": object});
                                out.extend(serde_json::to_vec(&line).unwrap());
                                out.push(b'\n');
                            }
                        }
                        if !out.is_empty() {
                            return Some((
                                Ok::<_, std::convert::Infallible>(Bytes::from(out)),
                                (seen, changed),
                            ));
                        }
                        if changed.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    Create,
    Replace,
    Merge,
    Apply,
}

async fn handle(
    State(server): State<ApiServer>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(target) = parse(uri.path()) else {
        return status_error(404, "NotFound", format!("no route {}", uri.path()));
    };
    let metadata_only = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watching => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    };
    *server
        .calls
        .lock()
        .unwrap()
        .entry(format!(
            "{verb} {}{}{}",
            target.collection,
            if target.status { "/status" } else { "" },
            if metadata_only { " (metadata)" } else { "" }
        ))
        .or_default() += 1;
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status_error(400, "BadRequest", format!("body: {e}")),
        }
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    match (method, target.name.clone()) {
        (Method::GET, None) => {
            let selector = query.get("labelSelector").cloned();
            if watching {
                let since = query
                    .get("resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                server.watch(target, since, selector, metadata_only)
            } else {
                let number = |key: &str| query.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
                let page = (number("limit"), number("continue"));
                server.list(&target, selector.as_deref(), metadata_only, page)
            }
        }
        (Method::GET, Some(name)) => {
            let store = server.store.lock().unwrap();
            match store
                .objects
                .get(&(target.collection.clone(), namespace, name.clone()))
            {
                Some(obj) => json_response(StatusCode::OK, obj),
                None => status_error(404, "NotFound", format!("{name} not found")),
            }
        }
        (Method::POST, None) => {
            let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                return status_error(422, "Invalid", "metadata.name is required".into());
            };
            let manager = query.get("fieldManager").map(String::as_str);
            server.write(&target, &namespace, &name, body, Write::Create, manager)
        }
        (Method::PUT, Some(name)) => {
            let manager = query.get("fieldManager").map(String::as_str);
            server.write(&target, &namespace, &name, body, Write::Replace, manager)
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let how = if content_type.starts_with("application/apply-patch") {
                Write::Apply
            } else {
                Write::Merge
            };
            let manager = query.get("fieldManager").map(String::as_str);
            server.write(&target, &namespace, &name, body, how, manager)
        }
        (Method::DELETE, Some(name)) => server.delete(&target, &namespace, &name),
        (method, _) => status_error(405, "MethodNotAllowed", format!("{method} {}", uri.path())),
    }
}
