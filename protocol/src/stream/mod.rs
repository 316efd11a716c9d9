//! Decisions of the data-stream protocol `/ledgermesh/stream/1`, without I/O:
//! whether a provider serves a request ([`server`]) and what a consumer does
//! when an attempt ends ([`client`]).

pub mod client;
pub mod server;
