//! Background sweeps that need the whole gateway (auth and backend).

pub mod with_server;
