//! An exit gateway's host setup: forwarding on, and an nftables table of
//! its own that masquerades what leaves, lets only answers back into the
//! device, and (without `--exit-lan`) keeps its peers from the host's own
//! services.

use super::{nft_delete, nft_table, table_of, HostError, Switches};

/// An exit gateway's host setup (see the module docs); undone when dropped.
pub struct Gateway {
    table: String,
    _switches: Switches,
}

impl Gateway {
    /// Forwards what comes in from device `tun` to the host's networks,
    /// masqueraded behind the host's address on the way out; with `lan`,
    /// its peers may also reach the host's own services.
    pub fn open(tun: &str, lan: bool) -> Result<Self, HostError> {
        let table = table_of(tun);
        let mut wanted = vec![
            ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
            ("/proc/sys/net/ipv6/conf/all/forwarding".to_string(), "1"),
        ];
        // A host that forwards IPv6 stops taking router advertisements
        // unless told to take them anyway (2): its own default route would
        // go with the next one.
        wanted.extend(accepting_ra().into_iter().map(|p| (p, "2")));
        let switches = Switches::set(&table, "forwarding", &wanted)?;
        // A host that did not forward before forwards nothing but ours
        // (in each family).
        let was_router = (
            switches.before("/proc/sys/net/ipv4/ip_forward") == Some("1"),
            switches.before("/proc/sys/net/ipv6/conf/all/forwarding") == Some("1"),
        );
        let gw = Gateway {
            table,
            _switches: switches,
        };
        nft_table(&gw.table, &body(tun, lan, was_router))?;
        Ok(gw)
    }
}

/// The interfaces (but `all`, `default` and `lo`) that take router
/// advertisements now (`accept_ra` 1).
fn accepting_ra() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv6/conf") else {
        return vec![];
    };
    (dir.flatten())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !["all", "default", "lo"].contains(&n.as_str()))
        .map(|n| format!("/proc/sys/net/ipv6/conf/{n}/accept_ra"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1"))
        .collect()
}

/// The gateway's nftables table (see the module docs).
fn body(tun: &str, lan: bool, (v4_router, v6_router): (bool, bool)) -> String {
    let mut through = format!(
        "    iifname \"{tun}\" oifname \"{tun}\" drop\n\
         \x20   oifname \"{tun}\" ct state established,related accept\n\
         \x20   oifname \"{tun}\" drop\n"
    );
    for (family, router) in [("ipv4", v4_router), ("ipv6", v6_router)] {
        if !router {
            through += &format!("    meta nfproto {family} iifname != \"{tun}\" drop\n");
        }
    }
    let mut body = format!(
        "  chain out {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   iifname \"{tun}\" oifname != \"{tun}\" masquerade\n  }}\n\
         \x20 chain through {{ type filter hook forward priority filter; policy accept;\n\
         {through}  }}\n"
    );
    if !lan {
        body += &format!(
            "  chain into {{ type filter hook input priority filter; policy accept;\n\
             \x20   iifname \"{tun}\" meta l4proto {{ icmp, ipv6-icmp }} accept\n\
             \x20   iifname \"{tun}\" ct state established,related accept\n\
             \x20   iifname \"{tun}\" drop\n  }}\n"
        );
    }
    body
}

impl Drop for Gateway {
    fn drop(&mut self) {
        nft_delete(&self.table);
        // The switches go back as they were when `_switches` drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_lets_only_answers_back_and_keeps_its_own_services_unless_told() {
        let b = body("lm0", false, (false, true));
        assert!(
            b.contains(
                "oifname \"lm0\" ct state established,related accept\n    oifname \"lm0\" drop"
            ),
            "{b}"
        );
        assert!(b.contains("iifname \"lm0\" oifname \"lm0\" drop"), "{b}");
        let no_router = "meta nfproto ipv4 iifname != \"lm0\" drop";
        assert!(
            b.contains(no_router),
            "a host that was no router stays none: {b}"
        );
        assert!(
            !b.contains("nfproto ipv6"),
            "its IPv6 forwarding is its own: {b}"
        );
        assert!(b.contains("chain into"), "{b}");
        let b = body("lm0", true, (true, true));
        assert!(
            !b.contains("nfproto"),
            "a router's own forwarding is its own: {b}"
        );
        assert!(!b.contains("chain into"), "{b}");
    }
}
