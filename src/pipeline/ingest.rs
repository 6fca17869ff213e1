//! Ingestion: the Segment HTTP Tracking API, answered only once events are durably queued —
//! to Segment's libraries in browsers too (CORS and the settings document, [`super::browser`]).

use super::browser;
use super::store::{EventStore, Refused, Routes};
use crate::metrics::METRICS;
use crate::telemetry;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Instrument;

pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

pub struct IngestState {
    pub store: EventStore,
    /// The destinations requests may reach.
    pub routes: Routes,
    pub ready: AtomicBool,
    /// Extra read-only endpoints (e.g. `/status`) that the runtime serves beside ingestion.
    pub status: Box<dyn Fn() -> Value + Send + Sync>,
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/v1/{kind}", post(ingest).options(preflight))
        .route("/{kind}", post(ingest).options(preflight))
        .route(
            "/v1/projects/{write_key}/settings",
            get(settings).options(preflight),
        )
        // Not here, and not merely "method not allowed" under `/{kind}` (API §10).
        .route("/dlq", axum::routing::any(not_on_this_port))
        .route("/dlq/replay", axum::routing::any(not_on_this_port))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    METRICS.render(),
                )
            }),
        )
        .route(
            "/status",
            get(|State(s): State<Arc<IngestState>>| async move { axum::Json((s.status)()) }),
        )
        .with_state(state)
}

async fn not_on_this_port() -> Rejection {
    Rejection(
        StatusCode::NOT_FOUND,
        "dead letters are served on the admin listener only (--admin-listen, 127.0.0.1:9091 by default); in the cluster: `hookline dlq list NAME -n NAMESPACE`".into(),
    )
}

async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) || !state.routes.loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    } else if !state.store.can_store().await {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue cannot store events",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// A refused request: its status and the reason given to the client.
#[derive(Debug)]
pub struct Rejection(pub StatusCode, pub String);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"success": false, "error": self.1}));
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // Segment libraries retry a 503; the queue is usually writable again within seconds.
            (self.0, [(axum::http::header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (self.0, body).into_response()
        }
    }
}

/// A source's rate limit reached: 429, and when to try again (whole seconds, at least one).
struct TooManyRequests(std::time::Duration);

impl IntoResponse for TooManyRequests {
    fn into_response(self) -> Response {
        let seconds = self.0.as_secs_f64().ceil().max(1.0) as u64;
        let body = json!({"success": false, "error": format!("this write key's rate limit is reached; retry in {seconds} s")});
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            axum::Json(body),
        )
            .into_response()
    }
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection(StatusCode::BAD_REQUEST, message.into())
}

/// A page's `Origin`, when the request came from a browser.
fn origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::ORIGIN)
}

/// `OPTIONS`: a browser asks whether a page of its origin may send. The key is not part of a
/// preflight, so an origin that some source here allows gets its 204; the `POST` that follows
/// is checked against its own key's source.
async fn preflight(State(state): State<Arc<IngestState>>, headers: HeaderMap) -> Response {
    let Some(origin) = origin(&headers) else {
        return (
            StatusCode::NO_CONTENT,
            [(header::ALLOW, "POST, GET, OPTIONS")],
        )
            .into_response();
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| state.routes.any_allows_origin(o));
    if !allowed {
        return origin_refused();
    }
    (
        StatusCode::NO_CONTENT,
        browser::preflight_headers(origin, &headers),
    )
        .into_response()
}

/// Marks the answer to a page of an origin no source here allows: it gets no CORS headers.
#[derive(Clone, Copy)]
struct OriginRefused;

fn origin_refused() -> Response {
    let mut response = Rejection(
        StatusCode::FORBIDDEN,
        "this origin may not send here: add it to the source's spec.allowedOrigins".into(),
    )
    .into_response();
    response.extensions_mut().insert(OriginRefused);
    response
}

/// Whether the page's origin (if any) may send with this source's key.
fn origin_allowed(headers: &HeaderMap, source: Option<&super::source::SourceRoute>) -> bool {
    match (origin(headers), source) {
        (Some(origin), Some(source)) => origin.to_str().is_ok_and(|o| source.allows_origin(o)),
        _ => true,
    }
}

/// A page may read the answer: every answer but an origin's refusal carries CORS headers.
fn with_cors(headers: &HeaderMap, mut response: Response) -> Response {
    if let Some(origin) = origin(headers)
        && response.extensions().get::<OriginRefused>().is_none()
    {
        for (name, value) in browser::answer_headers(origin) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `GET /v1/projects/{writeKey}/settings`: what analytics.js loads before sending; a key no
/// source here holds (when every destination requires one) is 404.
async fn settings(
    State(state): State<Arc<IngestState>>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match state.routes.admit(Some(&write_key)) {
        Ok(admitted) if !origin_allowed(&headers, admitted.source.as_deref()) => {
            return origin_refused();
        }
        Ok(_) => axum::Json(browser::settings(&write_key, &headers)).into_response(),
        Err(_) => {
            Rejection(StatusCode::NOT_FOUND, "no source has this write key".into()).into_response()
        }
    };
    with_cors(&headers, response)
}

/// The endpoint's message type, with Segment's short aliases (`/v1/t`, `/v1/b`, `/v1/import`).
fn endpoint_kind(path: &str) -> Option<&'static str> {
    Some(match path {
        "track" | "t" => "track",
        "identify" | "i" => "identify",
        "page" | "p" => "page",
        "screen" | "s" => "screen",
        "group" | "g" => "group",
        "alias" | "a" => "alias",
        "batch" | "b" | "import" => "batch",
        _ => return None,
    })
}

async fn ingest(
    State(state): State<Arc<IngestState>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let incoming = headers
        .get(telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::valid_traceparent);
    // Traced: the events carry this span's context; if not, the client's, passed on as it is.
    let (span, trace) = if telemetry::on() {
        let span = tracing::info_span!(
            "ingest",
            otel.kind = "server",
            endpoint = endpoint_kind(&kind).unwrap_or("unknown"),
            events = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, incoming);
        let trace = telemetry::traceparent_of(&span);
        (span, trace)
    } else {
        (tracing::Span::none(), incoming.map(str::to_string))
    };
    let accepted = accept(&state, &kind, &headers, body, trace.as_deref())
        .instrument(span.clone())
        .await;
    let response = with_cors(
        &headers,
        match accepted {
            Ok(count) => {
                METRICS
                    .events_received
                    .with_label_values(&[endpoint_kind(&kind).unwrap_or("unknown")])
                    .inc_by(count as u64);
                // Signed: OpenTelemetry exports unsigned integers as strings.
                span.record("events", count as i64);
                axum::Json(json!({"success": true})).into_response()
            }
            Err(refused) => refused,
        },
    );
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    response
}

/// Reads, checks and stores a request's events (a `text/plain` body, as `sendBeacon` and
/// analytics.js send, is JSON like any other); the number stored, or the answer refusing them.
async fn accept(
    state: &IngestState,
    kind: &str,
    headers: &HeaderMap,
    body: Body,
    trace: Option<&str>,
) -> Result<usize, Response> {
    let kind = endpoint_kind(kind).ok_or_else(|| {
        Rejection(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: /v1/{kind}"),
        )
        .into_response()
    })?;
    let limit = limit(kind);
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit).into_response())?;
    let (write_key, body) = read_body(kind, headers, raw).map_err(IntoResponse::into_response)?;
    let admitted = state
        .routes
        .admit(write_key.as_deref())
        .map_err(|refused| {
            let message = match refused {
                Refused::InvalidKey => "invalid write key",
                Refused::KeyRequired => {
                    "a write key is required (HTTP Basic username, or writeKey in the body)"
                }
            };
            Rejection(StatusCode::UNAUTHORIZED, message.into()).into_response()
        })?;
    if !origin_allowed(headers, admitted.source.as_deref()) {
        return Err(origin_refused());
    }
    if let Some(source) = &admitted.source {
        source
            .take_request()
            .map_err(|wait| TooManyRequests(wait).into_response())?;
    }
    let messages = messages(kind, body, Utc::now()).map_err(IntoResponse::into_response)?;

    let count = messages.len();
    state
        .store
        .store(&admitted, messages, trace)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not queue events");
            Rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not store the events; try again".into(),
            )
            .into_response()
        })?;
    Ok(count)
}

fn limit(kind: &str) -> usize {
    if kind == "batch" {
        MAX_BATCH_BYTES
    } else {
        MAX_MESSAGE_BYTES
    }
}

fn too_large(limit: usize) -> Rejection {
    Rejection(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {} KB", limit / 1024),
    )
}

/// A request body as ingestion reads it (after gzip, within the size limits): the write key it
/// carries and its JSON object. No I/O: the fuzz target `ingest` drives it directly.
pub fn read_body(
    kind: &str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<(Option<String>, RawObject), Rejection> {
    let limit = limit(kind);
    if raw.len() > limit {
        return Err(too_large(limit));
    }
    let bytes =
        decode_body(headers, raw, limit).map_err(|e| e.unwrap_or_else(|| too_large(limit)))?;
    let not_json =
        |e: &dyn std::fmt::Display| bad(format!("the request body is not valid JSON: {e}"));
    // UTF-8 checked once for the whole body: parsing bytes checks string by string.
    let utf8 = std::str::from_utf8(&bytes).map_err(|e| not_json(&e))?;
    let body: RawObject = match serde_json::from_str(utf8) {
        Ok(map) => map,
        Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(utf8).is_ok() => {
            return Err(bad("the request body must be a JSON object"));
        }
        Err(e) => return Err(not_json(&e)),
    };
    let write_key = basic_username(headers).or_else(|| text(&body, "writeKey"));
    Ok((write_key, body))
}

/// A JSON object whose values are kept as their text: a message is checked and filled in at
/// its top level only, and what it nests (properties, context, traits…) is stored as it came,
/// never parsed into values and serialized again. Hashed with foldhash (randomly seeded, like
/// the default, but several times cheaper for short keys): SipHash was the largest single cost
/// of reading a message. A message is at most 32 KB, which bounds what colliding keys could
/// cost.
pub type RawObject = indexmap::IndexMap<String, Box<RawValue>, foldhash::fast::RandomState>;

/// A value as raw JSON text.
fn raw(value: impl serde::Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("JSON values serialize")
}

/// The string at `key`, if it is one.
fn text(object: &RawObject, key: &str) -> Option<String> {
    serde_json::from_str(object.get(key)?.get()).ok()
}

/// The value at `key`, parsed.
fn parsed(object: &RawObject, key: &str) -> Option<Value> {
    serde_json::from_str(object.get(key)?.get()).ok()
}

/// One accepted message, serialized once: what the queue stores.
#[derive(Debug)]
pub struct Message {
    /// Its `messageId`, as a string.
    pub id: String,
    pub json: Vec<u8>,
}

/// When a request was received, formatted once for all its messages.
struct Received {
    at: DateTime<Utc>,
    /// As a JSON string.
    json: String,
}

/// The messages of a request of `kind` (`track`…, or `batch`), validated and filled in as
/// Segment's servers do, and serialized. No I/O.
pub fn messages(
    kind: &str,
    mut body: RawObject,
    received_at: DateTime<Utc>,
) -> Result<Vec<Message>, Rejection> {
    let received = Received {
        at: received_at,
        json: format!("\"{}\"", format_time(received_at)),
    };
    if kind != "batch" {
        body.insert("type".into(), raw(kind));
        return Ok(vec![finish(body, kind, &received).map_err(bad)?]);
    }
    let Some(batch) = body.get("batch") else {
        return Err(not_a_batch());
    };
    let items: Vec<RawObject> =
        serde_json::from_str(batch.get()).map_err(|_| not_objects(batch))?;
    let shared_context = parsed(&body, "context");
    let shared_integrations = parsed(&body, "integrations");
    let sent_at = body.get("sentAt");
    let mut out = Vec::with_capacity(items.len());
    for (i, mut msg) in items.into_iter().enumerate() {
        merge_under(&mut msg, "context", shared_context.as_ref());
        merge_under(&mut msg, "integrations", shared_integrations.as_ref());
        if let (Some(sent), false) = (sent_at, msg.contains_key("sentAt")) {
            msg.insert("sentAt".into(), sent.clone());
        }
        let ty = text(&msg, "type").unwrap_or_default();
        if !TYPES.contains(&ty.as_str()) {
            return Err(bad(format!(
                "batch[{i}].type must be one of {} (got {:?})",
                TYPES.join(", "),
                ty
            )));
        }
        let message = finish(msg, &ty, &received).map_err(|e| bad(format!("batch[{i}]: {e}")))?;
        out.push(message);
    }
    Ok(out)
}

fn not_a_batch() -> Rejection {
    bad("a batch request needs a `batch` array")
}

/// Why `batch` (valid JSON) is not an array of objects: read again only when it is not.
fn not_objects(batch: &RawValue) -> Rejection {
    match serde_json::from_str::<Vec<&RawValue>>(batch.get()) {
        Ok(items) => match items.iter().position(|item| !item.get().starts_with('{')) {
            Some(i) => bad(format!("batch[{i}] must be a JSON object")),
            None => not_a_batch(),
        },
        Err(_) => not_a_batch(),
    }
}

/// Undoes `Content-Encoding: gzip`, refusing to inflate past `limit`. `Err(None)` means too large.
fn decode_body(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, Option<Rejection>> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Some(bad(format!("the body is not valid gzip: {e}"))))?;
            if out.len() > limit {
                Err(None)
            } else {
                Ok(out.into())
            }
        }
        other => Err(Some(Rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported (use gzip)"),
        ))),
    }
}

fn basic_username(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(user, _)| user)
            .to_string(),
    )
}

/// Batch-level `context`/`integrations` under each message's own (the message's keys win).
fn merge_under(msg: &mut RawObject, key: &str, shared: Option<&Value>) {
    let Some(Value::Object(shared)) = shared else {
        return;
    };
    let merged = match parsed(msg, key) {
        Some(Value::Object(mut own)) => {
            for (k, v) in shared {
                if !own.contains_key(k) {
                    own.insert(k.clone(), v.clone());
                }
            }
            own
        }
        _ => shared.clone(),
    };
    msg.insert(key.into(), raw(merged));
}

/// A non-empty string or a number.
fn has_id(msg: &RawObject, key: &str) -> bool {
    match msg.get(key).map(|r| r.get().as_bytes()) {
        Some([b'"', b'"']) => false,
        Some([b'"', ..] | [b'-' | b'0'..=b'9', ..]) => true,
        _ => false,
    }
}

fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Validates a message and fills what Segment's servers fill: `messageId`, `receivedAt`, and
/// `timestamp` (corrected for the client's clock skew when `sentAt` is known, keeping the
/// client's value as `originalTimestamp`). The write key never travels further.
/// `ty`: its `type`, already checked.
fn finish(mut msg: RawObject, ty: &str, received: &Received) -> Result<Message, String> {
    msg.shift_remove("writeKey");
    if !has_id(&msg, "userId") && !has_id(&msg, "anonymousId") {
        return Err(format!("a {ty} message needs a userId or an anonymousId"));
    }
    if ty == "alias" && !has_id(&msg, "previousId") {
        return Err("an alias message needs a previousId".into());
    }
    let mut filled = Filled::default();
    let id = if has_id(&msg, "messageId") {
        parsed(&msg, "messageId")
            .map(|v| super::jsvalue::to_js_string(&v))
            .unwrap_or_default()
    } else {
        // From the thread's generator: the OS's, one system call per event, cost more than
        // the rest of the message.
        let id = format!(
            "api-{}",
            uuid::Builder::from_random_bytes(rand::random()).into_uuid()
        );
        filled.string("messageId", &id);
        id
    };
    filled.json("receivedAt", received.json.clone());
    let client_time = text(&msg, "timestamp");
    let parsed_time = client_time.as_deref().and_then(parse_time);
    let sent_at = text(&msg, "sentAt").as_deref().and_then(parse_time);
    match (parsed_time, sent_at) {
        (Some(ts), Some(sent)) => {
            filled.json("originalTimestamp", msg["timestamp"].get().to_owned());
            filled.string("timestamp", &format_time(received.at - (sent - ts)));
        }
        (Some(_), None) => filled.string("timestamp", &client_time.unwrap_or_default()),
        (None, _) => filled.json("timestamp", received.json.clone()),
    }
    let json = filled.write_into(&msg);
    if json.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is {} KB; the limit is 32 KB",
            json.len().div_ceil(1024)
        ));
    }
    Ok(Message { id, json })
}

/// The fields ingestion fills in, as JSON text, in the order it fills them: written straight
/// into the stored message instead of inserted into it first (each insert and each small
/// serialization showed in the profile).
#[derive(Default)]
struct Filled {
    fields: Vec<(&'static str, String)>,
}

impl Filled {
    fn string(&mut self, key: &'static str, value: &str) {
        let mut json = Vec::with_capacity(value.len() + 2);
        super::jsvalue::write_string(value, &mut json);
        self.json(key, String::from_utf8(json).expect("JSON text is UTF-8"));
    }

    fn json(&mut self, key: &'static str, value: String) {
        self.fields.push((key, value));
    }

    /// `msg` with the fields filled in: a field it has keeps its place, the others follow in
    /// order (as inserting them one by one would).
    fn write_into(&self, msg: &RawObject) -> Vec<u8> {
        let size = msg
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + self
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        let mut written = vec![false; self.fields.len()];
        for (key, value) in msg {
            let value = match self.fields.iter().position(|(k, _)| k == key) {
                Some(i) => {
                    written[i] = true;
                    &self.fields[i].1
                }
                None => value.get(),
            };
            write_field(&mut out, key, value);
        }
        for ((key, value), _) in self.fields.iter().zip(&written).filter(|(_, w)| !**w) {
            write_field(&mut out, key, value);
        }
        out.push(b'}');
        out
    }
}

fn write_field(out: &mut Vec<u8>, key: &str, json: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    super::jsvalue::write_string(key, out);
    out.push(b':');
    out.extend_from_slice(json.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> RawObject {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    /// The one message of a `track` request, as stored.
    fn track(body: Value, now: DateTime<Utc>) -> Result<(String, Value), String> {
        let mut messages = messages("track", msg(body), now).map_err(|r| r.1)?;
        let m = messages.remove(0);
        Ok((m.id, serde_json::from_slice(&m.json).unwrap()))
    }

    #[test]
    fn fills_ids_and_corrects_clock_skew() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T10:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let (id, m) = track(
            json!({"userId": "u", "writeKey": "k", "timestamp": "2026-11-28T09:00:00Z", "sentAt": "2026-11-28T09:00:05Z"}),
            now,
        )
        .unwrap();
        assert!(id.starts_with("api-"));
        assert_eq!(m["messageId"], id.as_str());
        assert_eq!(m["timestamp"], "2026-11-28T10:00:05.000Z");
        assert_eq!(m["originalTimestamp"], "2026-11-28T09:00:00Z");
        assert_eq!(m["receivedAt"], "2026-11-28T10:00:10.000Z");
        assert!(m.get("writeKey").is_none());
        let (other, _) = track(json!({"userId": "u"}), now).unwrap();
        assert_ne!(other, id, "each message gets its own id");
        assert!(track(json!({}), now).unwrap_err().contains("userId"));
        let alias = messages("alias", msg(json!({"userId": "u"})), now).unwrap_err();
        assert!(alias.1.contains("previousId"));
    }

    #[test]
    fn nested_values_are_stored_as_they_came_and_whitespace_is_no_matter() {
        let body = "{\n  \"userId\" :  \"u\" ,\n  \"messageId\": 42,\n  \"properties\": {\"b\": 1, \"a\": [1.50, \"\\u00e9\"]}\n}";
        let (_, body) = read_body("track", &HeaderMap::new(), Bytes::from(body)).unwrap();
        let m = messages("track", body, Utc::now()).unwrap().remove(0);
        assert_eq!(m.id, "42");
        let text = String::from_utf8(m.json).unwrap();
        assert!(
            text.contains(r#""properties":{"b": 1, "a": [1.50, "\u00e9"]}"#),
            "{text}"
        );
        let empty =
            read_body("track", &HeaderMap::new(), Bytes::from(r#"{"userId": ""}"#)).unwrap();
        assert!(messages("track", empty.1, Utc::now()).is_err());
        for (body, error) in [
            (&b"[1]"[..], "must be a JSON object"),
            (b"{\"a\":", "not valid JSON"),
            (b"{\"userId\": \"\xff\"}", "not valid JSON"),
        ] {
            let refused = read_body("track", &HeaderMap::new(), Bytes::from(body)).unwrap_err();
            assert!(refused.1.contains(error), "{}", refused.1);
        }
    }

    #[test]
    fn filled_fields_keep_the_place_of_those_they_replace_and_the_rest_follow_in_order() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T10:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = r#"{"receivedAt": "client", "userId": "u\"1", "messageId": "", "sentAt": "2026-11-28T10:00:00Z", "timestamp": "2026-11-28T09:59:59Z"}"#;
        let (_, body) = read_body("track", &HeaderMap::new(), Bytes::from(body)).unwrap();
        let m = messages("track", body, now).unwrap().remove(0);
        let text = String::from_utf8(m.json).unwrap();
        let id = &m.id;
        assert!(id.starts_with("api-"));
        assert_eq!(
            text,
            format!(
                r#"{{"receivedAt":"2026-11-28T10:00:10.000Z","userId":"u\"1","messageId":"{id}","sentAt":"2026-11-28T10:00:00Z","timestamp":"2026-11-28T10:00:09.000Z","type":"track","originalTimestamp":"2026-11-28T09:59:59Z"}}"#
            )
        );
    }

    #[test]
    fn a_batch_that_is_not_an_array_of_objects_is_refused_with_the_place() {
        let now = Utc::now();
        let track = json!({"type": "track", "userId": "u", "event": "e"});
        for (body, error) in [
            (
                json!({"batch": [track, 5]}),
                "batch[1] must be a JSON object",
            ),
            (
                json!({"batch": [track, [track]]}),
                "batch[1] must be a JSON object",
            ),
            (json!({"batch": {"0": track}}), "needs a `batch` array"),
            (json!({"batch": "x"}), "needs a `batch` array"),
            (json!({}), "needs a `batch` array"),
        ] {
            let refused = messages("batch", msg(body.clone()), now).unwrap_err();
            assert!(refused.1.contains(error), "{body}: {}", refused.1);
        }
        let accepted = messages("batch", msg(json!({"batch": [track, track]})), now).unwrap();
        assert_eq!(accepted.len(), 2);
    }

    #[test]
    fn batch_context_is_merged_under_the_message() {
        let mut m = msg(json!({"context": {"ip": "1"}}));
        merge_under(
            &mut m,
            "context",
            Some(&json!({"ip": "2", "library": {"name": "x"}})),
        );
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"context": {"ip": "1", "library": {"name": "x"}}})
        );
    }
}
