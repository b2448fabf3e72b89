//! The operator's logs, on standard output: text or JSON lines (shared with the gateway).

pub use dask_common::logging::{LogFormat, init};
