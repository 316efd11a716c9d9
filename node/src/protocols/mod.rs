//! The node's own libp2p protocols, one folder each.

pub mod hardnat;
pub mod observe;
pub mod pay;
pub mod relay;
pub mod stream;
