//! The one port: connection caps and idle timeouts, the SNI of a TLS
//! ClientHello, scheduler connections handed over or spliced, and plain
//! HTTP passed to the router.

pub mod idle;
pub mod listener;
pub mod sni;
