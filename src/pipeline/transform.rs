//! Insert functions (`spec.transform.javascript`): Segment-style destination handlers run in an
//! embedded QuickJS, after the subscription filter and before the mapping. Compiled once per
//! destination; each call is limited in time and the runtime in memory; no network, no file
//! system, no modules — QuickJS without its `std`/`os` modules has none.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TIME_LIMIT: Duration = Duration::from_secs(5);
pub const MEMORY_LIMIT: usize = 64 * 1024 * 1024;
/// The name QuickJS gives evaluated source in stack traces.
const SOURCE_NAME: &str = "eval_script";

/// The error classes and console the function sees, and the driver that calls a handler and
/// reports its outcome as JSON (so only strings cross between Rust and JavaScript).
const PRELUDE: &str = r#"
"use strict";
class DropEvent extends Error { constructor(message) { super(message); this.name = "DropEvent"; } }
class ValidationError extends Error { constructor(message) { super(message); this.name = "ValidationError"; } }
class InvalidEventPayload extends Error { constructor(message) { super(message); this.name = "InvalidEventPayload"; } }
class EventNotSupported extends Error { constructor(message) { super(message); this.name = "EventNotSupported"; } }
class RetryError extends Error { constructor(message) { super(message); this.name = "RetryError"; } }
globalThis.DropEvent = DropEvent;
globalThis.ValidationError = ValidationError;
globalThis.InvalidEventPayload = InvalidEventPayload;
globalThis.EventNotSupported = EventNotSupported;
globalThis.RetryError = RetryError;
(() => {
  const log = globalThis.__hookline_log;
  const line = (...args) => log(args.map((a) => typeof a === "string" ? a : JSON.stringify(a)).join(" "));
  globalThis.console = { log: line, info: line, warn: line, error: line, debug: line };
  delete globalThis.__hookline_log;
  const dropping = [DropEvent, ValidationError, InvalidEventPayload, EventNotSupported];
  const outcome = async (name, input, settings) => {
    const handler = globalThis[name];
    if (typeof handler !== "function") return { outcome: "unhandled" };
    try {
      const value = await handler(JSON.parse(input), JSON.parse(settings));
      if (value === null || value === undefined) return { outcome: "drop", reason: "ReturnedNull", message: "" };
      return { outcome: "ok", value };
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      const kind = dropping.find((k) => e instanceof k);
      if (kind) return { outcome: "drop", reason: kind.name, message };
      if (e instanceof RetryError) return { outcome: "retry", message };
      const where = e instanceof Error && e.stack ? e.stack.match(/eval_script:(\d+)/) : null;
      const name = e instanceof Error ? e.name : "thrown value";
      return { outcome: "error", message: `${name}: ${message}${where ? ` (line ${where[1]})` : ""}` };
    }
  };
  globalThis.__hookline_call = (name, input, settings) =>
    outcome(name, input, settings).then((r) => JSON.stringify(r));
  globalThis.__hookline_has = (name) => typeof globalThis[name] === "function";
})();
"#;

/// The handler for each Segment event type.
pub fn handler_for(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "track" => "onTrack",
        "identify" => "onIdentify",
        "page" => "onPage",
        "screen" => "onScreen",
        "group" => "onGroup",
        "alias" => "onAlias",
        _ => return None,
    })
}

pub const BATCH_HANDLER: &str = "onBatch";
const HANDLERS: [&str; 7] = [
    "onTrack",
    "onIdentify",
    "onPage",
    "onScreen",
    "onGroup",
    "onAlias",
    BATCH_HANDLER,
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
}

/// What a handler made of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Continue with this (possibly modified) event.
    Continue(Value),
    /// Dropped: `reason` is the error class, `ReturnedNull`, or `NoHandler`.
    Drop { reason: String, message: String },
    /// `RetryError`: try again later, like a 5xx.
    Retry(String),
    /// Any other exception, the time or memory limit: dead-letter with this message.
    Fail(String),
}

struct Engine {
    /// Keeps its runtime (and the runtime's limits) alive.
    context: rquickjs::Context,
    deadline: Arc<Mutex<Option<Instant>>>,
}

/// A compiled insert function. Calls are serialized: one QuickJS runtime per destination.
#[derive(Clone)]
pub struct InsertFunction {
    source: Arc<str>,
    destination: Arc<str>,
    engine: Arc<Mutex<Engine>>,
    /// The handlers the function defines, found once at compile time.
    handlers: Vec<&'static str>,
}

impl std::fmt::Debug for InsertFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsertFunction")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl InsertFunction {
    pub fn compile(source: &str, destination: &str) -> Result<InsertFunction, CompileError> {
        let engine = Engine::new(source, destination)?;
        let handlers = HANDLERS.iter().copied().filter(|h| engine.has(h)).collect();
        Ok(InsertFunction {
            source: source.into(),
            destination: destination.into(),
            engine: Arc::new(Mutex::new(engine)),
            handlers,
        })
    }

    pub fn has_batch_handler(&self) -> bool {
        self.handlers.contains(&BATCH_HANDLER)
    }

    /// One event: the handler for its `type`, else `onBatch` with a batch of one; a type with
    /// neither is dropped.
    pub fn run(&self, event: &Value, settings: &Value) -> Outcome {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match handler_for(kind).filter(|h| self.handlers.contains(h)) {
            Some(handler) => self.call(handler, event, settings),
            None if self.has_batch_handler() => {
                match self.run_batch(std::slice::from_ref(event), settings) {
                    Ok(mut one) => one.remove(0),
                    Err(outcome) => outcome,
                }
            }
            None => Outcome::Drop {
                reason: "NoHandler".into(),
                message: format!("the function has no handler for event type {kind:?}"),
            },
        }
    }

    /// `onBatch`: the events in, the events out in the same order (each `null` drops one).
    pub fn run_batch(&self, events: &[Value], settings: &Value) -> Result<Vec<Outcome>, Outcome> {
        match self.call(BATCH_HANDLER, &Value::Array(events.to_vec()), settings) {
            Outcome::Continue(Value::Array(out)) if out.len() == events.len() => Ok(out
                .into_iter()
                .map(|v| match v {
                    Value::Null => Outcome::Drop {
                        reason: "ReturnedNull".into(),
                        message: String::new(),
                    },
                    v => Outcome::Continue(v),
                })
                .collect()),
            Outcome::Continue(other) => Err(Outcome::Fail(format!(
                "onBatch must return an array of {} events in order, got {}",
                events.len(),
                match other {
                    Value::Array(a) => format!("an array of {}", a.len()),
                    other => format!("{other}"),
                }
            ))),
            other => Err(other),
        }
    }

    fn call(&self, handler: &str, input: &Value, settings: &Value) -> Outcome {
        let mut engine = self.engine.lock().expect("insert function lock");
        let result = engine.call(handler, input, settings);
        if let Err(Limit(message)) = &result {
            // A runtime that ran out of time or memory may be left half-way through anything:
            // start from a fresh one (the source compiled before, so it compiles again).
            tracing::warn!(destination = %self.destination, error = %message, "insert function stopped; restarting its runtime");
            if let Ok(fresh) = Engine::new(&self.source, &self.destination) {
                *engine = fresh;
            }
        }
        match result {
            Ok(outcome) => outcome,
            Err(Limit(message)) => Outcome::Fail(message),
        }
    }
}

/// The time or memory limit was hit.
struct Limit(String);

impl Engine {
    fn new(source: &str, destination: &str) -> Result<Engine, CompileError> {
        let fail = |e: rquickjs::Error| CompileError {
            message: format!("cannot start the JavaScript engine: {e}"),
        };
        let runtime = rquickjs::Runtime::new().map_err(fail)?;
        runtime.set_memory_limit(MEMORY_LIMIT);
        runtime.set_max_stack_size(1024 * 1024);
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let watched = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            watched
                .lock()
                .ok()
                .and_then(|d| *d)
                .is_some_and(|d| Instant::now() > d)
        })));
        let context = rquickjs::Context::full(&runtime).map_err(fail)?;
        let destination = destination.to_string();
        let engine = Engine { context, deadline };
        engine.with_deadline(|| {
            engine.context.with(|ctx| {
                let log = rquickjs::Function::new(ctx.clone(), move |line: String| {
                    tracing::debug!(destination = %destination, "console: {line}");
                })
                .map_err(fail)?;
                ctx.globals().set("__hookline_log", log).map_err(fail)?;
                ctx.eval::<(), _>(PRELUDE).map_err(fail)?;
                let mut options = rquickjs::context::EvalOptions::default();
                options.global = true;
                options.strict = false;
                ctx.eval_with_options::<(), _>(source.as_bytes().to_vec(), options)
                    .map_err(|_| CompileError {
                        message: describe_exception(&ctx.catch()),
                    })
            })
        })?;
        Ok(engine)
    }

    fn has(&self, handler: &str) -> bool {
        self.context.with(|ctx| {
            ctx.globals()
                .get::<_, rquickjs::Function>("__hookline_has")
                .and_then(|f| f.call::<_, bool>((handler,)))
                .unwrap_or(false)
        })
    }

    fn with_deadline<T>(&self, f: impl FnOnce() -> T) -> T {
        *self.deadline.lock().expect("deadline lock") = Some(Instant::now() + TIME_LIMIT);
        let out = f();
        *self.deadline.lock().expect("deadline lock") = None;
        out
    }

    fn call(&mut self, handler: &str, input: &Value, settings: &Value) -> Result<Outcome, Limit> {
        let started = Instant::now();
        let report = self.with_deadline(|| {
            self.context.with(|ctx| {
                let call: rquickjs::Function = ctx
                    .globals()
                    .get("__hookline_call")
                    .map_err(|e| e.to_string())?;
                let promise: rquickjs::Promise = call
                    .call((handler, input.to_string(), settings.to_string()))
                    .map_err(|_| describe_exception(&ctx.catch()))?;
                promise
                    .finish::<String>()
                    .map_err(|_| describe_exception(&ctx.catch()))
            })
        });
        let report = match report {
            Ok(r) => r,
            Err(message) if started.elapsed() >= TIME_LIMIT => {
                return Err(Limit(format!(
                    "the insert function ran longer than {} s and was stopped ({message})",
                    TIME_LIMIT.as_secs()
                )));
            }
            Err(message) if message.contains("out of memory") => {
                return Err(Limit(format!(
                    "the insert function used more than {} MB of memory and was stopped",
                    MEMORY_LIMIT / (1024 * 1024)
                )));
            }
            Err(message) => return Ok(Outcome::Fail(message)),
        };
        Ok(parse_report(&report))
    }
}

fn parse_report(report: &str) -> Outcome {
    let v: Value = match serde_json::from_str(report) {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(format!("the insert function's result is not JSON: {e}")),
    };
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    match v["outcome"].as_str() {
        Some("ok") => Outcome::Continue(v["value"].clone()),
        Some("unhandled") => Outcome::Drop {
            reason: "NoHandler".into(),
            message: "the function has no handler for this event type".into(),
        },
        Some("drop") => Outcome::Drop {
            reason: text("reason"),
            message: text("message"),
        },
        Some("retry") => Outcome::Retry(text("message")),
        _ => Outcome::Fail(text("message")),
    }
}

/// `SyntaxError: unexpected token in expression: ')' (line 3)` from a QuickJS exception.
fn describe_exception(value: &rquickjs::Value) -> String {
    let Some(exception) = value.as_exception() else {
        return format!("thrown value: {value:?}");
    };
    let message = exception.message().unwrap_or_default();
    let name: String = exception
        .get::<_, String>("name")
        .unwrap_or_else(|_| "Error".into());
    let stack = exception.stack().unwrap_or_default();
    let line = stack
        .split(&format!("{SOURCE_NAME}:"))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter(|l| !l.is_empty());
    match line {
        Some(line) => format!("{name}: {message} (line {line})"),
        None => format!("{name}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(source: &str) -> InsertFunction {
        InsertFunction::compile(source, "test").unwrap()
    }

    fn track() -> Value {
        json!({"type": "track", "event": "Order Completed", "properties": {"total": 9.5}})
    }

    #[test]
    fn each_event_type_goes_to_its_handler_and_the_result_continues() {
        let f = compile(
            r#"
            async function onTrack(event, settings) {
              event.properties.total_cents = Math.round(event.properties.total * 100);
              event.properties.via = settings.destination;
              return event;
            }
            async function onIdentify(event) { return { id: event.userId }; }
            "#,
        );
        let settings = json!({"destination": "crm"});
        let Outcome::Continue(out) = f.run(&track(), &settings) else {
            panic!()
        };
        assert_eq!(out["properties"]["total_cents"], 950);
        assert_eq!(out["properties"]["via"], "crm");
        assert_eq!(
            f.run(&json!({"type": "identify", "userId": "u1"}), &settings),
            Outcome::Continue(json!({"id": "u1"}))
        );
        let Outcome::Drop { reason, .. } = f.run(&json!({"type": "page"}), &settings) else {
            panic!()
        };
        assert_eq!(reason, "NoHandler");
    }

    #[test]
    fn null_and_the_error_classes_drop_retry_or_fail() {
        let f = compile(
            r#"
            async function onTrack(event) {
              switch (event.event) {
                case "null": return null;
                case "undefined": return;
                case "drop": throw new DropEvent("not wanted");
                case "validation": throw new ValidationError("no email");
                case "payload": throw new InvalidEventPayload("bad");
                case "unsupported": throw new EventNotSupported("nope");
                case "retry": throw new RetryError("busy");
                default: null.property;
              }
            }
            "#,
        );
        let run = |name: &str| f.run(&json!({"type": "track", "event": name}), &json!({}));
        for (name, reason) in [
            ("null", "ReturnedNull"),
            ("undefined", "ReturnedNull"),
            ("drop", "DropEvent"),
            ("validation", "ValidationError"),
            ("payload", "InvalidEventPayload"),
            ("unsupported", "EventNotSupported"),
        ] {
            let Outcome::Drop { reason: got, .. } = run(name) else {
                panic!("{name}")
            };
            assert_eq!(got, reason);
        }
        assert_eq!(run("retry"), Outcome::Retry("busy".into()));
        let Outcome::Fail(message) = run("other") else {
            panic!()
        };
        assert!(
            message.starts_with("TypeError") && message.contains("(line 11)"),
            "{message}"
        );
    }

    #[test]
    fn a_function_that_does_not_compile_names_the_line() {
        let e = InsertFunction::compile(
            "async function onTrack(event) {\n  return event\n  +;\n}",
            "t",
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("SyntaxError") && e.message.contains("line 3"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_endless_loop_is_stopped_and_the_function_keeps_working() {
        let f = compile(
            "async function onTrack(e) { if (e.event === 'loop') { for (;;) {} } return e; }",
        );
        let started = Instant::now();
        let Outcome::Fail(message) = f.run(&json!({"type": "track", "event": "loop"}), &json!({}))
        else {
            panic!()
        };
        assert!(message.contains("longer than 5 s"), "{message}");
        assert!(started.elapsed() < TIME_LIMIT + Duration::from_secs(2));
        assert!(matches!(f.run(&track(), &json!({})), Outcome::Continue(_)));
    }

    #[test]
    fn memory_is_limited() {
        let f = compile(
            "async function onTrack(e) { const a = []; for (;;) { a.push('x'.repeat(1 << 20)); } }",
        );
        let Outcome::Fail(message) = f.run(&track(), &json!({})) else {
            panic!()
        };
        assert!(message.contains("memory"), "{message}");
        assert!(matches!(
            f.run(&json!({"type": "identify"}), &json!({})),
            Outcome::Drop { .. }
        ));
    }

    #[test]
    fn no_require_import_network_or_files() {
        let f = compile(
            r#"
            async function onTrack(e) {
              return {
                require: typeof require, fetch: typeof fetch, std: typeof std, os: typeof os,
                XMLHttpRequest: typeof XMLHttpRequest, process: typeof process,
              };
            }
            async function onPage(e) { await import("os"); return e; }
            "#,
        );
        let Outcome::Continue(out) = f.run(&track(), &json!({})) else {
            panic!()
        };
        assert!(
            out.as_object().unwrap().values().all(|v| v == "undefined"),
            "{out}"
        );
        assert!(matches!(
            f.run(&json!({"type": "page"}), &json!({})),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn on_batch_returns_the_events_in_order() {
        let f = compile(
            "async function onBatch(events) { return events.map((e, i) => i === 1 ? null : { n: i }); }",
        );
        assert!(f.has_batch_handler());
        let out = f
            .run_batch(&[track(), track(), track()], &json!({}))
            .unwrap();
        assert_eq!(out[0], Outcome::Continue(json!({"n": 0})));
        assert!(matches!(out[1], Outcome::Drop { .. }));
        let short = compile("async function onBatch(events) { return events.slice(1); }");
        assert!(matches!(
            short.run_batch(&[track(), track()], &json!({})),
            Err(Outcome::Fail(_))
        ));
    }
}
