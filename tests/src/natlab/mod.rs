//! The NAT lab (`scripts/natlab.sh`) from tests: one lab per test, torn down
//! on drop (which also kills every process left inside its namespaces).

pub mod world;

use crate::procs::{bin_path, project_root, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;

/// NAT flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping (masquerade).
    Eim,
    /// Endpoint-dependent mapping (masquerade fully-random).
    Edm,
}

impl Nat {
    fn as_str(self) -> &'static str {
        match self {
            Nat::Eim => "eim",
            Nat::Edm => "edm",
        }
    }
}

/// A running lab.
pub struct Lab {
    /// Its name (namespaces are `lm<name><host>`).
    pub name: String,
    script: PathBuf,
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

impl Lab {
    /// Builds a lab, or `None` (with a message) where that is impossible and we
    /// are not in CI; under `CI=true` an impossible lab is a failure.
    pub fn up(test: &str, nat1: Nat, nat2: Nat) -> Option<Lab> {
        Self::up_with(test, nat1, nat2, 0, 0.0)
    }

    /// [`Lab::up`] with `delay_ms` one way and `loss_pct` on the internet links.
    pub fn up_with(test: &str, nat1: Nat, nat2: Nat, delay_ms: u32, loss_pct: f64) -> Option<Lab> {
        Self::up_opts(test, nat1, nat2, delay_ms, loss_pct, false)
    }

    /// [`Lab::up_with`]; with `switch` the internet is the user-space switch
    /// even without delay or loss, so that [`Lab::impair`] works.
    pub fn up_opts(
        test: &str,
        nat1: Nat,
        nat2: Nat,
        delay_ms: u32,
        loss_pct: f64,
        switch: bool,
    ) -> Option<Lab> {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        if !is_root() {
            if ci {
                panic!("{test}: the NAT lab needs root and CI=true");
            }
            eprintln!("SKIP {test}: the NAT lab needs root (network namespaces, nftables)");
            return None;
        }
        let name = format!("t{:05x}", rand::random::<u32>() & 0xfffff);
        let script = project_root().join("scripts/natlab.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args([
                "up",
                &name,
                "--nat1",
                nat1.as_str(),
                "--nat2",
                nat2.as_str(),
            ])
            .args([
                "--delay",
                &delay_ms.to_string(),
                "--loss",
                &loss_pct.to_string(),
            ])
            .args(switch.then_some("--switch"))
            .output()
            .expect("run natlab.sh");
        if !out.status.success() {
            let _ = Command::new("bash")
                .arg(&script)
                .args(["down", &name])
                .status();
            let msg = format!(
                "{test}: the NAT lab could not be built: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if ci {
                panic!("{msg}");
            }
            eprintln!("SKIP {msg}");
            return None;
        }
        Some(Lab { name, script })
    }

    /// From now on, `host`'s link to the internet adds `ms` one way and
    /// drops `loss_pct` percent of frames (a lab built with `switch`).
    pub fn impair(&self, host: &str, ms: u32, loss_pct: f64) {
        let status = Command::new("bash")
            .arg(&self.script)
            .args([
                "impair",
                &self.name,
                host,
                &ms.to_string(),
                &loss_pct.to_string(),
            ])
            .status()
            .expect("run natlab.sh impair");
        assert!(status.success(), "natlab.sh impair {host} failed");
    }

    /// The namespace of a lab host.
    pub fn ns(&self, host: &str) -> String {
        format!("lm{}{host}", self.name)
    }

    /// Starts `ledgermesh ARGS` inside `host`.
    pub fn start(&self, host: &str, label: &str, dir: &Path, args: &[&str]) -> Proc {
        let ns = self.ns(host);
        let bin = bin_path();
        let bin = bin.to_str().expect("utf-8 path");
        Proc::start_program(
            label,
            dir,
            Path::new("ip"),
            &["netns", "exec", &ns, bin],
            args,
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.name])
            .status();
    }
}
