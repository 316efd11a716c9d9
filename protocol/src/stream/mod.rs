//! Decisions of the data-stream protocol `/ledgermesh/stream/1`, without I/O:
//! whether a provider serves a request ([`server`]) and what a consumer does
//! when an attempt ends ([`client`]), and how many streams are served at
//! once ([`slots`]).

pub mod client;
pub mod fair;
pub mod priced;
pub mod server;
pub mod slots;
