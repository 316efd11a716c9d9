//! The roles a node plays. They orchestrate: the decisions are the protocol
//! crate's machines, the wire work is `swarm` and `protocols`.

pub mod consumer;
pub mod paying;
pub mod provider;
pub mod relay;
#[cfg(target_os = "linux")]
pub mod vpn;
