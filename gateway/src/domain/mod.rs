//! What a cluster is and the rules about it, with no I/O: models, user
//! options and profiles, pod shaping, limits, group policies, and the
//! decisions made from heartbeats. Imports nothing else of the crate.

pub mod forgotten;
pub mod limits;
pub mod models;
pub mod options;
pub mod pods;
pub mod policy;
pub mod tls;
