//! The data path, one module per stage, in the order events flow:
//! ingest → queue → (reads) → subscription → mapping → batch → deliver (signing, retries, dead letters).
//! [`worker`] wires the stages for one destination. The queue is one of two backends behind
//! a seam: [`store`] is ingestion's side (append locally, or publish to JetStream), [`inbox`]
//! the worker's (read, complete, retry later, dead-letter).

pub mod admin;
pub mod batch;
pub mod browser;
pub mod dead_letters;
pub mod deliver;
pub mod envelope;
pub mod inbox;
pub mod ingest;
pub mod jsvalue;
pub mod mapping;
pub mod queue;
pub mod reads;
pub mod samples;
pub mod single;
pub mod source;
pub mod store;
pub mod subscription;
pub mod transform;
pub mod worker;
