//! Development tools, apart from the node itself: the one in-process network
//! builder ([`net::DevNet`]) that the demo, the benchmark and the end-to-end
//! tests all use, the event [`recorder::Recorder`], the demo, the benchmark
//! and a local anvil chain.

pub mod bench;
pub mod demo;
pub mod devchain;
pub mod net;
pub mod recorder;

pub use net::{DevNet, EmitterFactory};
pub use recorder::{keep_tmp, Recorder, TempDir};
