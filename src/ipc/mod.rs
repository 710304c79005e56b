//! The control socket (seed 000) and the event stream (seed 003): server, endpoints, the CLI
//! client, and the profiling endpoints.

pub mod client;
pub mod handlers;
pub mod pprof;
pub mod server;
