//! The data path, one module per stage, in the order events flow:
//! ingest → queue → subscription → mapping → batch → deliver (with signing and the dead-letter store).

pub mod jsvalue;
pub mod mapping;
pub mod subscription;
