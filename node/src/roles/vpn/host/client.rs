//! An exit client's host setup: the exit's routes in a routing table of
//! their own, rules that keep the node's own traffic and the answers to
//! connections made to this host on the host's routes, and with the kill
//! switch an nftables chain that lets nothing else out.

use super::{
    clear_pref, family, nft_delete, nft_is_ours, nft_nets, nft_set_ours, nft_table, run, table_of,
    HostError, Switches, MARK, MARK_MASK, OWN_PREF, PREF, TABLE,
};
use ledgermesh_protocol::vpn::IpNet;

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
    /// The host's LAN, which the kill switch lets through.
    lan: Vec<IpNet>,
    /// The reverse-path check's use of marks (see [`Client::nft_body`]).
    valid_mark: Option<Switches>,
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
            lan: super::connected_networks(tun),
            valid_mark: None,
        };
        client.clear_rules();
        clear_pref(OWN_PREF);
        own_rules(own)?;
        let valid_mark = "/proc/sys/net/ipv4/conf/all/src_valid_mark".to_string();
        let name = format!("{}-client", client.table);
        let switch = Switches::set(&name, "the reverse-path check", &[(valid_mark, "1")])?;
        client.valid_mark = Some(switch);
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
        let (mark, is_ours) = (nft_set_ours("meta mark"), nft_is_ours("meta mark"));
        let mut marks = String::new();
        for (proto, ports) in [("tcp", &own.tcp), ("udp", &own.udp)] {
            if !ports.is_empty() {
                marks += &format!("    {proto} sport {{ {} }} {mark}\n", set(ports));
            }
        }
        for (family, hosts) in [("ip", own.v4_hosts()), ("ip6", own.v6_hosts())] {
            if !hosts.is_empty() {
                marks += &format!("    {family} daddr {{ {hosts} }} {mark}\n");
            }
        }
        // Connections made to this host by another interface are ours too:
        // their answers keep the host's routes (an SSH session stays up).
        // Marks are kept on the connection, so that the reverse-path check
        // looks answers up in the host's routes, not the tunnel's.
        let tun = &self.tun;
        let (ct_ours, ct_mark) = (nft_is_ours("ct mark"), nft_set_ours("ct mark"));
        let mut body = format!(
            "  chain own {{ type route hook output priority mangle; policy accept;\n{marks}\
             \x20   {ct_ours} {mark}\n  }}\n\
             \x20 chain keep {{ type filter hook postrouting priority mangle; policy accept;\n\
             \x20   {is_ours} {ct_mark}\n  }}\n\
             \x20 chain answers {{ type filter hook prerouting priority mangle; policy accept;\n\
             \x20   iifname != \"{tun}\" ct state new fib daddr type local {ct_mark}\n\
             \x20   {ct_ours} {mark}\n  }}\n"
        );
        if self.kill_switch {
            let mut lan = String::new();
            for (family, v4) in [("ip", true), ("ip6", false)] {
                if let Some(nets) = nft_nets(&self.lan, v4) {
                    lan += &format!("    {family} daddr {{ {nets} }} accept\n");
                }
            }
            body += &format!(
                "  chain kill_switch {{ type filter hook output priority filter; policy accept;\n\
                 \x20   oifname {{ \"lo\", \"{tun}\" }} accept\n\
                 \x20   {is_ours} accept\n\
                 \x20   ct direction reply accept\n{lan}\
                 \x20   ip daddr {{ 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 }} accept\n\
                 \x20   ip6 daddr {{ fe80::/10, ff00::/8 }} accept\n\
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
                let mark = format!("{MARK:#x}/{MARK_MASK:#x}");
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
        // The reverse-path switch goes back when `valid_mark` drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_marks_its_own_traffic_and_its_kill_switch_lets_only_the_tunnel_and_lan_out() {
        let own = OwnPorts {
            tcp: vec![4001],
            udp: vec![4001, 4002],
            hosts: vec!["203.0.113.20".parse().unwrap()],
        };
        let mut c = Client {
            tun: "lm0".into(),
            table: "ledgermesh_lm0".into(),
            routes: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            kill_switch: false,
            on: false,
            lan: vec!["192.0.2.0/28".parse().unwrap()],
            valid_mark: None,
        };
        let body = c.nft_body(&own);
        let mark = "meta mark set meta mark and 0xffffff or 0x4c000000";
        assert!(
            body.contains(&format!("tcp sport {{ 4001 }} {mark}")),
            "{body}"
        );
        assert!(
            body.contains(&format!("udp sport {{ 4001, 4002 }} {mark}")),
            "{body}"
        );
        assert!(
            body.contains(&format!("ip daddr {{ 203.0.113.20 }} {mark}")),
            "{body}"
        );
        assert!(!body.contains("ip6 daddr"), "{body}");
        let made_to_us = "iifname != \"lm0\" ct state new fib daddr type local ct mark set";
        assert!(
            body.contains(made_to_us),
            "only connections made to this host: {body}"
        );
        assert!(!body.contains("kill_switch"), "{body}");
        c.kill_switch = true;
        let body = c.nft_body(&OwnPorts::default());
        assert!(!body.contains("sport"), "no empty sets: {body}");
        assert!(
            body.contains("oifname { \"lo\", \"lm0\" } accept"),
            "{body}"
        );
        assert!(body.contains("ip daddr { 192.0.2.0/28 } accept"), "{body}");
        assert!(body.contains("counter reject"), "{body}");
        assert_eq!(c.families(), vec!["-4", "-6"]);
        // Dropped without ever touching the host.
        std::mem::forget(c);
    }
}
