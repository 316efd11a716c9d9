//! The node's own libp2p protocols, one folder each.

pub mod stream;
