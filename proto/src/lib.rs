//! Protobuf messages of ledgermesh, generated from `schemas/ledgermesh.proto`.
//!
//! This crate holds schemas and generated code only; the logic that builds and
//! checks these messages lives in `ledgermesh-protocol`.
#![allow(missing_docs, clippy::all)]

/// Version 1 of the ledgermesh messages.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ledgermesh.v1.rs"));
}

/// Circuit relay v2's hop and stop messages (the libp2p relay protocol).
pub mod circuit_v2 {
    include!(concat!(env!("OUT_DIR"), "/circuit.v2.rs"));
}
