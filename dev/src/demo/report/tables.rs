//! The summary as the tables a person reads.

use super::DemoSummary;
use ledgermesh_node::events::PathKind;

pub(crate) fn print_tables(s: &DemoSummary) {
    println!("\nNODES");
    println!("  {:<12} {:<22} peer id", "name", "role");
    for n in &s.nodes {
        println!("  {:<12} {:<22} {}", n.name, n.role, n.peer_id);
    }
    println!("\nLEDGER MESSAGES (sealed with HPKE to the recipient; no address in the clear)");
    println!("  {:<12} {:<12} {:<18} bytes", "from", "to (stdin)", "kind");
    for m in &s.ledger_messages {
        println!("  {:<12} {:<12} {:<18} {}", m.from, m.to, m.kind, m.bytes);
    }
    println!("\nCONNECTIONS (consumer → provider)");
    println!(
        "  {:<12} {:<12} {:<9} {:<6} {:<8} upgrade",
        "consumer", "provider", "path", "tcp/quic", "via"
    );
    for c in &s.connections {
        let path = c.path.as_str();
        let upgrade = match (c.upgraded, c.ms_after_relayed, c.upgraded_transport) {
            (true, Some(ms), Some(t)) => {
                format!("→ direct ({}) after {ms} ms (DCUtR)", t.as_str())
            }
            _ if c.path == PathKind::Relayed => "stayed relayed".into(),
            _ => "-".into(),
        };
        println!(
            "  {:<12} {:<12} {:<9} {:<8} {:<8} {}",
            c.consumer,
            c.provider,
            path,
            c.transport.as_str(),
            c.via.clone().unwrap_or_else(|| "-".into()),
            upgrade
        );
    }
    println!("\nPUBLIC ADDRESS (peer consensus: a quorum of observers must agree)");
    for p in &s.public_addresses {
        println!(
            "  {:<12} {:<26} {:<22} reachable={:<5} {}/{} observers agree",
            p.node,
            p.addr.clone().unwrap_or_else(|| "-".into()),
            p.mapping,
            p.reachable
                .map(|r| r.to_string())
                .unwrap_or_else(|| "?".into()),
            p.agreeing,
            p.observers
        );
    }
    println!("\nGRANTS (issued for verified service requests; nobody else is served)");
    println!(
        "  {:<12} {:<12} {:<6} until",
        "provider", "consumer", "stream"
    );
    for g in &s.grants {
        println!(
            "  {:<12} {:<12} {:<6} {}",
            g.provider, g.consumer, g.stream, g.until
        );
    }
    println!("\nREFUSED (a peer that posted no request asks the stream protocol directly)");
    for r in &s.refusals {
        println!(
            "  {:<12} {:<12} {:<6} {}",
            r.provider, r.peer, r.stream, r.reason
        );
    }
    if !s.stranger_refused {
        println!("  the stranger was NOT refused as it should have been");
    }
    println!("\nSTREAMS");
    println!(
        "  {:<12} {:<12} {:<6} {:>10} {:>9} {:<17} {:<8} resumes",
        "consumer", "provider", "stream", "bytes", "MiB/s", "sha256", "verified"
    );
    for st in &s.streams {
        println!(
            "  {:<12} {:<12} {:<6} {:>10} {:>9.1} {:<17} {:<8} {}",
            st.consumer,
            st.provider,
            st.stream,
            st.bytes,
            st.mib_s,
            st.sha256.get(..16).unwrap_or("-"),
            if st.verified { "yes" } else { "NO" },
            st.resumes
        );
        if let Some(e) = &st.error {
            println!("      error: {e}");
        }
    }
    let live: Vec<_> = s
        .streams
        .iter()
        .filter_map(|st| st.live.as_ref().map(|l| (st, l)))
        .collect();
    if !live.is_empty() {
        println!("\nLIVE (read once from `exec:` by the provider, fanned out; each chunk signed and verified)");
        println!(
            "  {:<12} {:<12} {:<6} {:>10} {:>8} {:>7} {:>9} {:>9} {:>5}",
            "consumer",
            "provider",
            "stream",
            "joined at",
            "bytes",
            "chunks",
            "lag p50",
            "lag p99",
            "gaps"
        );
        for (st, l) in live {
            println!(
                "  {:<12} {:<12} {:<6} {:>10} {:>8} {:>7} {:>6.1} ms {:>6.1} ms {:>5}",
                st.consumer,
                st.provider,
                st.stream,
                l.from_offset,
                st.bytes,
                l.chunks,
                l.lag_ms_p50,
                l.lag_ms_p99,
                l.gaps
            );
        }
    }
    if !s.payments.is_empty() {
        println!("\nPAYMENTS (the payees' books on the in-memory chain, the payers' own view beside them; wei)");
        println!(
            "  {:<10} {:<12} {:<12} {:>9} {:>8} {:>12} {:>12} {:>12} {:>12} {:>6}",
            "channel",
            "payer",
            "payee",
            "bytes",
            "vouchers",
            "owed",
            "voucher",
            "claimed",
            "payer says",
            "agree"
        );
        for p in &s.payments {
            println!(
                "  {:<10} {:<12} {:<12} {:>9} {:>8} {:>12} {:>12} {:>12} {:>12} {:>6}",
                p.channel,
                p.payer,
                p.payee,
                p.bytes_metered,
                p.vouchers,
                p.owed_wei,
                p.paid_wei,
                p.claimed_wei,
                p.payer_voucher_wei,
                if p.agree { "yes" } else { "NO" },
            );
        }
    }
    println!(
        "\n{} in {:.1} s: {} of {} streams complete and verified; {} refused without a grant.",
        if s.ok { "OK" } else { "FAILED" },
        s.elapsed_ms as f64 / 1000.0,
        s.streams.iter().filter(|x| x.verified).count(),
        s.streams.len(),
        if s.stranger_refused {
            "the stranger was"
        } else {
            "the stranger was NOT"
        },
    );
}
