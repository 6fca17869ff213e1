//! Ingest request bodies: JSON, gzip, batches — any bytes a client can send must end in a
//! clear rejection or in validated messages, never a crash.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // First byte: which endpoint and whether the body claims to be gzip.
    let Some((&flags, body)) = input.split_first() else {
        return;
    };
    let kind = ["track", "identify", "page", "screen", "group", "alias", "batch"][usize::from(flags % 7)];
    let mut headers = HeaderMap::new();
    if flags & 0x80 != 0 {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if flags & 0x40 != 0 {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic d2s6"));
    }
    let raw = bytes::Bytes::copy_from_slice(body);
    if let Ok((_, body)) = hookline::pipeline::ingest::read_body(kind, &headers, raw) {
        let _ = hookline::pipeline::ingest::messages(kind, body, chrono::Utc::now());
    }
});
