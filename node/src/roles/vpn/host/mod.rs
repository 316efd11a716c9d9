//! The host's side of an exit, through `nft` and `ip` (nftables and
//! iproute2, as wg-quick drives them), set up with the role and removed
//! when it ends:
//!
//! - an **exit gateway** turns forwarding on and masquerades what comes in
//!   from its device behind its own address (an nftables table of its
//!   own); only answers go back into the device, peers never reach each
//!   other through it, and (without `--exit-lan`) they reach neither the
//!   host's own services nor its LAN;
//! - an **exit client** sends the exit's routes (by default everything)
//!   into its device through a routing table of its own, consulted for
//!   every packet but the node's own (those from its listening ports and
//!   to its ledger's RPC endpoint: routing rules keep them on the host's
//!   routes, and nftables marks them), and after the host's more specific
//!   routes (its LAN stays reachable), and but the answers to connections
//!   made to this host. With the kill switch, its table also drops every
//!   packet that would leave by another interface but to the LAN, whether
//!   or not the exit is reachable.
//!
//! Every name carries the device's, so that setting up again after a
//! crash replaces what the last run left.

mod client;
mod gateway;

pub use client::{Client, OwnPorts};
pub use gateway::Gateway;

use ledgermesh_protocol::vpn::IpNet;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The firewall mark on the node's own packets (and connections), in the
/// top byte of the mark alone ([`MARK_MASK`]): other marks (Tailscale's
/// `0xff0000`, for one) are kept.
pub const MARK: u32 = 0x4c00_0000;
/// The bits of the mark that are ours.
pub const MARK_MASK: u32 = 0xff00_0000;
/// The routing table of an exit client's routes.
pub const TABLE: u32 = 0x4c4d;
/// The preference of the rules that keep the node's own traffic on the
/// host's routes; the rule that keeps the host's specific routes first is
/// the next, and the rule into [`TABLE`] the one after (clear of
/// Tailscale's 5210–5270).
const OWN_PREF: u32 = 5300;
/// The host's specific routes first.
const PREF: u32 = OWN_PREF + 1;

/// `MARK` in nftables: whether a mark holds ours, and setting ours.
fn nft_is_ours(what: &str) -> String {
    format!("{what} and {MARK_MASK:#x} == {MARK:#x}")
}
fn nft_set_ours(what: &str) -> String {
    format!("{what} set {what} and {:#x} or {MARK:#x}", !MARK_MASK)
}

/// A host command that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed ({cmd}): {detail}")]
pub struct HostError {
    /// What was being set up.
    pub what: &'static str,
    /// The command.
    pub cmd: String,
    /// What it said, or why it could not run.
    pub detail: String,
}

/// Runs `cmd` with `args` (and `input` on its standard input).
fn run(what: &'static str, cmd: &str, args: &[&str], input: Option<&str>) -> Result<(), HostError> {
    let fail = |detail: String| HostError {
        what,
        cmd: format!("{cmd} {}", args.join(" ")),
        detail,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => fail(format!("{cmd} is not installed")),
            _ => fail(e.to_string()),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use io::Write;
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}

/// Whether `name` can be a device's name here: 1 to 15 letters, digits,
/// `_`, `-` and `.` (what Linux takes, less what a shell or an nftables
/// script would read as syntax).
pub fn is_device_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// The nftables table of device `tun` (nftables names take letters,
/// digits and `_`: `_` is written `__`, `-` `_h` and `.` `_d`, so that no
/// two devices share one).
fn table_of(tun: &str) -> String {
    let mut safe = String::new();
    for c in tun.chars() {
        match c {
            '_' => safe.push_str("__"),
            '-' => safe.push_str("_h"),
            '.' => safe.push_str("_d"),
            c => safe.push(c),
        }
    }
    format!("ledgermesh_{safe}")
}

/// The host's directly connected networks (its LAN), both families, but
/// those on device `tun`, from its main routing table.
pub fn connected_networks(tun: &str) -> Vec<IpNet> {
    let mut nets = vec![];
    for family in ["-4", "-6"] {
        let args = ["-j", family, "route", "show", "table", "main"];
        let Ok(out) = Command::new("ip").args(args).output() else {
            continue;
        };
        let routes: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).unwrap_or_default();
        for r in routes {
            let on_link = r.get("gateway").is_none() && r["dev"] != tun;
            let dst = r["dst"].as_str().unwrap_or("default");
            let net = dst
                .parse::<IpNet>()
                .ok()
                .or_else(|| dst.parse::<std::net::IpAddr>().ok().map(IpNet::from));
            if let (true, Some(net)) = (on_link, net) {
                // Link-local and multicast are refused anyway.
                let special = match net.addr() {
                    std::net::IpAddr::V6(a) => a.is_unicast_link_local() || a.is_multicast(),
                    std::net::IpAddr::V4(a) => a.is_link_local() || a.is_multicast(),
                };
                if !special && !nets.contains(&net) {
                    nets.push(net);
                }
            }
        }
    }
    nets
}

/// nftables set elements of `nets` of one family.
fn nft_nets(nets: &[IpNet], v4: bool) -> Option<String> {
    let list: Vec<String> = (nets.iter())
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(ToString::to_string)
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

/// Switches of the kernel's turned on, their values before kept in a file
/// of ours while on, so that a run after a crash puts back what the host
/// had, not what the crashed run left.
struct Switches {
    file: PathBuf,
    before: Vec<(String, String)>,
}

impl Switches {
    /// Turns on each `(path, value)` (for `what`), starting from what a
    /// crashed run of the same name left in its file.
    fn set(name: &str, what: &'static str, wanted: &[(String, &str)]) -> Result<Self, HostError> {
        let dir = PathBuf::from("/run/ledgermesh");
        let file = dir.join(format!("{name}.switches"));
        let left: Vec<(String, String)> = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(p, v)| (p.to_string(), v.to_string()))
            })
            .collect();
        let mut switches = Switches { file, before: left };
        for (path, value) in wanted {
            let fail = |e: io::Error| HostError {
                what,
                cmd: format!("write {value} to {path}"),
                detail: e.to_string(),
            };
            let now = std::fs::read_to_string(path)
                .map_err(fail)?
                .trim()
                .to_string();
            if !switches.before.iter().any(|(p, _)| p == path) {
                switches.before.push((path.clone(), now));
            }
            let text: String = (switches.before.iter())
                .map(|(p, v)| format!("{p}={v}\n"))
                .collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(&switches.file, text);
            std::fs::write(path, value).map_err(fail)?;
        }
        Ok(switches)
    }

    /// What `path` was before we turned it.
    fn before(&self, path: &str) -> Option<&str> {
        (self.before.iter())
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}

impl Drop for Switches {
    fn drop(&mut self) {
        for (path, value) in &self.before {
            let _ = std::fs::write(path, value);
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Replaces the nftables table `name` with `body` (in one transaction:
/// made empty first, so that a table a crash left is replaced, not added
/// to).
fn nft_table(name: &str, body: &str) -> Result<(), HostError> {
    let script = format!(
        "table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n"
    );
    run("the nftables table", "nft", &["-f", "-"], Some(&script))
}

fn nft_delete(name: &str) {
    let _ = run("", "nft", &["delete", "table", "inet", name], None);
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    }
}

/// Removes every rule at `pref`, both families (a few left by earlier
/// runs, or one per own port and host).
fn clear_pref(pref: u32) {
    let pref = pref.to_string();
    for family in ["-4", "-6"] {
        for _ in 0..64 {
            if run("", "ip", &[family, "rule", "del", "pref", &pref], None).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_device_and_no_two_devices_share_one() {
        assert_eq!(table_of("ledgermesh0"), "ledgermesh_ledgermesh0");
        assert_eq!(table_of("wg-1.x"), "ledgermesh_wg_h1_dx");
        assert_ne!(table_of("a-b"), table_of("a_b"));
        assert!(is_device_name("ledgermesh0") && is_device_name("wg-1.x"));
        for bad in ["", "sixteen-chars-xx", "a b", "a\"b", "a;b", "a}b", "a/b"] {
            assert!(!is_device_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn our_mark_is_the_top_byte_and_keeps_the_rest() {
        assert_eq!(
            nft_is_ours("meta mark"),
            "meta mark and 0xff000000 == 0x4c000000"
        );
        assert_eq!(
            nft_set_ours("ct mark"),
            "ct mark set ct mark and 0xffffff or 0x4c000000"
        );
    }
}
