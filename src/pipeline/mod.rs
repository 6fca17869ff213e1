//! The data path, one module per stage, in the order events flow:
//! ingest → queue → subscription → mapping → batch → deliver (signing, retries, dead letters).
//! [`worker`] wires the stages for one destination.

pub mod batch;
pub mod dead_letters;
pub mod deliver;
pub mod envelope;
pub mod inbox;
pub mod ingest;
pub mod jsvalue;
pub mod mapping;
pub mod queue;
pub mod samples;
pub mod single;
pub mod store;
pub mod subscription;
pub mod transform;
pub mod worker;
