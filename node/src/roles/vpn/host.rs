//! The host's side of an exit, through `nft` and `ip` (nftables and
//! iproute2, as wg-quick drives them), set up with the role and removed
//! when it ends:
//!
//! - an **exit gateway** turns forwarding on and masquerades what comes in
//!   from its device behind its own address (an nftables table of its
//!   own); peers never reach each other through it;
//! - an **exit client** sends the exit's routes (by default everything)
//!   into its device through a routing table of its own, consulted for
//!   every packet but the node's own (those from its listening ports and
//!   to its ledger's RPC endpoint: routing rules keep them on the host's
//!   routes, and nftables marks them), and after the host's more specific
//!   routes (its LAN stays reachable). With the
//!   kill switch, its table also drops every packet that would leave by
//!   another interface, whether or not the exit is reachable.
//!
//! Every name carries the device's, so that setting up again after a
//! crash replaces what the last run left.

use ledgermesh_protocol::vpn::IpNet;
use std::io;
use std::process::{Command, Stdio};

/// The firewall mark on the node's own packets.
pub const MARK: u32 = 0x4c4d;
/// The routing table of an exit client's routes.
pub const TABLE: u32 = 0x4c4d;
/// The preference of the rule that keeps the host's specific routes first;
/// the rule into [`TABLE`] is the next, and the rules that keep the node's
/// own traffic on the host's routes the one before.
const PREF: u32 = 5209;
/// The preference of the node's own traffic's rules.
const OWN_PREF: u32 = PREF - 1;

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

/// The nftables table of device `tun` (nftables names take letters,
/// digits and `_`).
fn table_of(tun: &str) -> String {
    let safe: String = tun
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("ledgermesh_{safe}")
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

/// A switch of the kernel's turned on, and its value before.
struct Sysctl {
    path: &'static str,
    before: String,
}

impl Sysctl {
    /// Turns `path` on (for `what`).
    fn set(what: &'static str, path: &'static str) -> Result<Self, HostError> {
        let fail = |e: io::Error| HostError {
            what,
            cmd: format!("write 1 to {path}"),
            detail: e.to_string(),
        };
        let before = std::fs::read_to_string(path).map_err(fail)?;
        std::fs::write(path, "1").map_err(fail)?;
        Ok(Sysctl { path, before })
    }

    fn restore(&self) {
        let _ = std::fs::write(self.path, self.before.trim());
    }
}

/// An exit gateway's host setup (see the module docs); undone when dropped.
pub struct Gateway {
    table: String,
    sysctls: Vec<Sysctl>,
}

impl Gateway {
    /// Forwards what comes in from device `tun` to the host's networks,
    /// masqueraded behind the host's address on the way out.
    pub fn open(tun: &str) -> Result<Self, HostError> {
        let mut gw = Gateway {
            table: table_of(tun),
            sysctls: vec![],
        };
        for path in [
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ] {
            gw.sysctls.push(Sysctl::set("forwarding", path)?);
        }
        let body = format!(
            "  chain out {{ type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   iifname \"{tun}\" oifname != \"{tun}\" masquerade\n  }}\n\
             \x20 chain through {{ type filter hook forward priority filter; policy accept;\n\
             \x20   iifname \"{tun}\" oifname \"{tun}\" drop\n  }}\n"
        );
        nft_table(&gw.table, &body)?;
        Ok(gw)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        nft_delete(&self.table);
        self.sysctls.iter().for_each(Sysctl::restore);
    }
}

/// The node's own listening ports, whose packets keep the host's routes.
#[derive(Debug, Clone, Default)]
pub struct OwnPorts {
    /// TCP ports.
    pub tcp: Vec<u16>,
    /// UDP ports (QUIC).
    pub udp: Vec<u16>,
    /// Hosts the node talks to itself (its ledger's RPC endpoint).
    pub hosts: Vec<std::net::IpAddr>,
}

impl OwnPorts {
    fn hosts_of(&self, v4: bool) -> String {
        let list: Vec<String> = (self.hosts.iter())
            .filter(|h| h.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        list.join(", ")
    }
    fn v4_hosts(&self) -> String {
        self.hosts_of(true)
    }
    fn v6_hosts(&self) -> String {
        self.hosts_of(false)
    }
}

/// An exit client's host setup (see the module docs); undone when dropped.
pub struct Client {
    tun: String,
    table: String,
    routes: Vec<IpNet>,
    kill_switch: bool,
    on: bool,
    /// The reverse-path check's use of marks (see [`Client::nft_body`]).
    valid_mark: Option<Sysctl>,
}

impl Client {
    /// Routes `routes` into device `tun` (once [`Client::route`] says so,
    /// or at once and for good with `kill_switch`), except the node's own
    /// packets, from `own`.
    pub fn open(
        tun: &str,
        routes: Vec<IpNet>,
        own: &OwnPorts,
        kill_switch: bool,
    ) -> Result<Self, HostError> {
        let mut client = Client {
            tun: tun.to_string(),
            table: table_of(tun),
            routes,
            kill_switch,
            on: false,
            valid_mark: None,
        };
        client.clear_rules();
        clear_pref(OWN_PREF);
        own_rules(own)?;
        let valid_mark = "/proc/sys/net/ipv4/conf/all/src_valid_mark";
        client.valid_mark = Some(Sysctl::set("the reverse-path check", valid_mark)?);
        nft_table(&client.table, &client.nft_body(own))?;
        for net in &client.routes {
            let (family, net, table) = (family(net), net.to_string(), TABLE.to_string());
            let args = [
                family, "route", "replace", &net, "dev", tun, "table", &table,
            ];
            run("the exit's routes", "ip", &args, None)?;
        }
        if kill_switch {
            client.route(true)?;
        }
        Ok(client)
    }

    fn nft_body(&self, own: &OwnPorts) -> String {
        let set = |ports: &[u16]| {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            list.join(", ")
        };
        let mut marks = String::new();
        if !own.tcp.is_empty() {
            marks += &format!(
                "    tcp sport {{ {} }} meta mark set {MARK:#x}\n",
                set(&own.tcp)
            );
        }
        if !own.udp.is_empty() {
            marks += &format!(
                "    udp sport {{ {} }} meta mark set {MARK:#x}\n",
                set(&own.udp)
            );
        }
        // The answers to the node's own packets carry their mark too (kept
        // on the connection), so that the reverse-path check looks them up
        // in the host's routes, not the tunnel's.
        for (family, hosts) in [("ip", own.v4_hosts()), ("ip6", own.v6_hosts())] {
            if !hosts.is_empty() {
                marks += &format!("    {family} daddr {{ {hosts} }} meta mark set {MARK:#x}\n");
            }
        }
        let mut body = format!(
            "  chain own {{ type route hook output priority mangle; policy accept;\n{marks}  }}\n\
             \x20 chain keep {{ type filter hook postrouting priority mangle; policy accept;\n\
             \x20   meta mark {MARK:#x} ct mark set meta mark\n  }}\n\
             \x20 chain answers {{ type filter hook prerouting priority mangle; policy accept;\n\
             \x20   ct mark {MARK:#x} meta mark set ct mark\n  }}\n"
        );
        if self.kill_switch {
            let tun = &self.tun;
            body += &format!(
                "  chain kill_switch {{ type filter hook output priority filter; policy accept;\n\
                 \x20   oifname {{ \"lo\", \"{tun}\" }} accept\n\
                 \x20   meta mark {MARK:#x} accept\n\
                 \x20   ct direction reply accept\n\
                 \x20   icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
                 \x20   counter reject\n  }}\n"
            );
        }
        body
    }

    /// Sends the routes into the device (`on`), or leaves them to the
    /// host's own routes again. With the kill switch they stay on.
    pub fn route(&mut self, on: bool) -> Result<(), HostError> {
        if on == self.on || (!on && self.kill_switch) {
            return Ok(());
        }
        self.clear_rules();
        if on {
            for family in self.families() {
                let (pref, table) = (PREF.to_string(), TABLE.to_string());
                let next = (PREF + 1).to_string();
                let keep = [family, "rule", "add", "pref", &pref, "table", "main"];
                run(
                    "the exit's rules",
                    "ip",
                    &[&keep[..], &["suppress_prefixlength", "0"]].concat(),
                    None,
                )?;
                let mark = format!("{MARK:#x}");
                let into = [
                    family, "rule", "add", "pref", &next, "not", "fwmark", &mark, "table", &table,
                ];
                run("the exit's rules", "ip", &into, None)?;
            }
        }
        self.on = on;
        Ok(())
    }

    fn families(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = self.routes.iter().map(family).collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// Removes the rules into the tunnel's table (also those a crashed run
    /// left).
    fn clear_rules(&mut self) {
        clear_pref(PREF);
        clear_pref(PREF + 1);
        self.on = false;
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

/// The rules that keep the node's own traffic on the host's routes: from
/// its listening ports, and to its own hosts. They match when a socket
/// first picks its route, and so its source address (a mark set later by
/// nftables would reroute a packet but keep the tunnel's source address).
fn own_rules(own: &OwnPorts) -> Result<(), HostError> {
    let pref = OWN_PREF.to_string();
    let mut rules: Vec<Vec<String>> = vec![];
    for (proto, ports) in [("udp", &own.udp), ("tcp", &own.tcp)] {
        for port in ports.iter() {
            for family in ["-4", "-6"] {
                rules.push(
                    [family, "ipproto", proto, "sport", &port.to_string()]
                        .map(String::from)
                        .to_vec(),
                );
            }
        }
    }
    for host in &own.hosts {
        let family = if host.is_ipv4() { "-4" } else { "-6" };
        rules.push([family, "to", &host.to_string()].map(String::from).to_vec());
    }
    for r in rules {
        let mut args: Vec<&str> = vec![&r[0], "rule", "add", "pref", &pref];
        args.extend(r[1..].iter().map(String::as_str));
        args.extend(["lookup", "main"]);
        run("the node's own routes", "ip", &args, None)?;
    }
    Ok(())
}

impl Drop for Client {
    fn drop(&mut self) {
        self.clear_rules();
        clear_pref(OWN_PREF);
        for family in ["-4", "-6"] {
            let table = TABLE.to_string();
            let _ = run("", "ip", &[family, "route", "flush", "table", &table], None);
        }
        nft_delete(&self.table);
        if let Some(s) = &self.valid_mark {
            s.restore();
        }
    }
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_device_and_nothing_nftables_refuses() {
        assert_eq!(table_of("ledgermesh0"), "ledgermesh_ledgermesh0");
        assert_eq!(table_of("wg-1.x"), "ledgermesh_wg_1_x");
    }

    #[test]
    fn a_client_marks_its_own_ports_and_its_kill_switch_lets_only_the_tunnel_out() {
        let own = OwnPorts {
            tcp: vec![4001],
            udp: vec![4001, 4002],
            hosts: vec!["203.0.113.20".parse().unwrap()],
        };
        let mut c = Client {
            tun: "lm0".into(),
            table: table_of("lm0"),
            routes: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            kill_switch: false,
            on: false,
            valid_mark: None,
        };
        let body = c.nft_body(&own);
        assert!(
            body.contains("ct mark 0x4c4d meta mark set ct mark"),
            "{body}"
        );
        assert!(
            body.contains("tcp sport { 4001 } meta mark set 0x4c4d"),
            "{body}"
        );
        assert!(
            body.contains("udp sport { 4001, 4002 } meta mark set 0x4c4d"),
            "{body}"
        );
        assert!(
            body.contains("ip daddr { 203.0.113.20 } meta mark set 0x4c4d"),
            "{body}"
        );
        assert!(!body.contains("ip6 daddr"), "{body}");
        assert!(!body.contains("kill_switch"), "{body}");
        c.kill_switch = true;
        let body = c.nft_body(&OwnPorts::default());
        assert!(!body.contains("sport"), "no empty sets: {body}");
        assert!(
            body.contains("oifname { \"lo\", \"lm0\" } accept"),
            "{body}"
        );
        assert!(body.contains("counter reject"), "{body}");
        assert_eq!(c.families(), vec!["-4", "-6"]);
        // Dropped without ever touching the host.
        std::mem::forget(c);
    }
}
