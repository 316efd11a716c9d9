//! Development tools, apart from the node itself: the one in-process network
//! builder ([`net::DevNet`]) that the demo, the benchmark and the end-to-end
//! tests all use, the event [`recorder::Recorder`], the demo
//! (`ledgermesh demo`), the benchmark (`ledgermesh bench`) and a local anvil
//! chain (`ledgermesh devchain`). The node library carries none of this; the
//! `ledgermesh` binary depends on both.
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod devchain;
pub mod net;
pub mod recorder;

pub use ledgermesh_node::scratch::{keep_tmp, TempDir};
pub use net::{DevNet, EmitterFactory};
pub use recorder::Recorder;
