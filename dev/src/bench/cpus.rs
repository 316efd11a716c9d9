//! Which cores the benchmark's processes run on (`bench --cpus`): the relay
//! process on its own cores, the endpoints (this process, and the iroh peer
//! process) on the others, so a relayed figure is not a fight for the same
//! cores. Linux only (sched_setaffinity); elsewhere nothing is pinned.
//!
//! A child process is told its cores in [`ENV`]; `ledgermesh` (and the
//! iroh peer) pin every thread to them first thing ([`pin_from_env`]).

use serde_json::{json, Value};
use std::sync::OnceLock;

/// The variable naming a benchmark child's cores (`0,1,2`).
pub const ENV: &str = "LMBENCH_CPUS";

/// How to place the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuPlan {
    /// Pin on machines with at least 4 cores: a quarter of them (at least
    /// one) for the relay, the rest for the endpoints.
    #[default]
    Auto,
    /// Pin nothing.
    Off,
    /// This many cores (the highest-numbered) for the relay, the rest for the endpoints.
    Relay(usize),
}

impl std::str::FromStr for CpuPlan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CpuPlan::Auto),
            "off" => Ok(CpuPlan::Off),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .map(CpuPlan::Relay)
                .ok_or_else(|| {
                    format!("--cpus takes auto, off or the relay's core count, not {n}")
                }),
        }
    }
}

/// The cores each side got, when pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The relay process's cores.
    pub relay: Vec<usize>,
    /// This process's (and the iroh peer's) cores.
    pub endpoints: Vec<usize>,
}

/// Splits `available` cores (0..available) as `plan` says; `None`: not pinned.
pub fn split(plan: CpuPlan, available: usize) -> Option<Placement> {
    let relay = match plan {
        CpuPlan::Off => return None,
        CpuPlan::Auto if available < 4 => return None,
        CpuPlan::Auto => (available / 4).max(1),
        CpuPlan::Relay(n) => n,
    };
    if relay >= available {
        return None;
    }
    Some(Placement {
        relay: (available - relay..available).collect(),
        endpoints: (0..available - relay).collect(),
    })
}

/// The cores the machine offered before pinning, and the placement.
static PLACED: OnceLock<(usize, Option<Placement>)> = OnceLock::new();

/// Cores the machine offers this process (before any pinning of ours).
pub fn available() -> usize {
    PLACED.get().map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |(n, _)| *n,
    )
}

fn placed() -> Option<Placement> {
    PLACED.get().and_then(|(_, p)| p.clone())
}

/// Pins this process's threads (and so the threads they start) to the
/// endpoints' cores, and remembers the placement for the child processes.
/// The first call decides; a later one changes nothing.
pub fn apply(plan: CpuPlan) -> Result<Option<Placement>, String> {
    let available = available();
    let placement = split(plan, available);
    if let Some(p) = &placement {
        pin_threads(&p.endpoints)?;
    }
    Ok(PLACED.get_or_init(|| (available, placement)).1.clone())
}

/// What [`apply`] decided, for the report.
pub fn report(plan: CpuPlan) -> Value {
    let available = available();
    match placed() {
        Some(p) => {
            json!({"pinned": true, "available": available, "relay": p.relay, "endpoints": p.endpoints})
        }
        None => json!({
            "pinned": false,
            "available": available,
            "why": match plan {
                CpuPlan::Off => "--cpus off",
                _ => "fewer than 4 cores (auto), or no core left for the endpoints: processes share every core",
            },
        }),
    }
}

/// Makes `cmd`'s process start on the relay's cores (when pinned).
pub fn for_relay(cmd: &mut tokio::process::Command) {
    if let Some(p) = placed() {
        pin_child(cmd, p.relay);
    }
}

/// Makes `cmd`'s process start on the endpoints' cores (when pinned).
pub fn for_endpoints(cmd: &mut tokio::process::Command) {
    if let Some(p) = placed() {
        pin_child(cmd, p.endpoints);
    }
}

#[cfg(target_os = "linux")]
fn cpu_set(cores: &[usize]) -> Result<nix::sched::CpuSet, String> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cores {
        set.set(c).map_err(|e| format!("core {c}: {e}"))?;
    }
    Ok(set)
}

#[cfg(target_os = "linux")]
fn pin_threads(cores: &[usize]) -> Result<(), String> {
    let set = cpu_set(cores)?;
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
            .map_err(|e| format!("pinning thread {tid}: {e}"))?;
    }
    Ok(())
}

fn pin_child(cmd: &mut tokio::process::Command, cores: Vec<usize>) {
    let list: Vec<String> = cores.iter().map(usize::to_string).collect();
    cmd.env(ENV, list.join(","));
}

/// Pins every thread of this process to the cores [`ENV`] names, when it
/// names any (a benchmark child); a bad list is reported and ignored.
pub fn pin_from_env() {
    let Ok(list) = std::env::var(ENV) else { return };
    let cores: Result<Vec<usize>, _> = list.split(',').map(str::parse).collect();
    let result = cores
        .map_err(|e| format!("{ENV}={list}: {e}"))
        .and_then(|c| pin_threads(&c));
    if let Err(e) = result {
        eprintln!("warning: not pinned: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_threads(_: &[usize]) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_split_between_the_relay_and_the_endpoints() {
        assert_eq!(split(CpuPlan::Auto, 2), None);
        assert_eq!(split(CpuPlan::Off, 16), None);
        let p = split(CpuPlan::Auto, 16).unwrap();
        assert_eq!(p.relay, vec![12, 13, 14, 15]);
        assert_eq!(p.endpoints, (0..12).collect::<Vec<_>>());
        let p = split(CpuPlan::Relay(1), 2).unwrap();
        assert_eq!((p.relay, p.endpoints), (vec![1], vec![0]));
        assert_eq!(split(CpuPlan::Relay(2), 2), None, "no core left");
        assert_eq!("auto".parse(), Ok(CpuPlan::Auto));
        assert_eq!("3".parse(), Ok(CpuPlan::Relay(3)));
        assert!("0".parse::<CpuPlan>().is_err());
        assert!("many".parse::<CpuPlan>().is_err());
    }
}
