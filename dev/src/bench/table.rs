//! The human-readable table of every figure.

use serde_json::Value;

/// Prints the figures as a table.
pub fn print_table(v: &Value) {
    let f = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    let has = |k: &str| v.get(k).is_some();
    if has("baseline") {
        println!("\nBASELINES (same run)");
        println!(
            "  raw TCP over loopback          {:>10} MiB/s",
            f("/baseline/tcp_loopback_mib_s")
        );
        println!(
        "  ChaCha20-Poly1305, one core    {:>10} MiB/s  (ring, as in noise; RustCrypto {} MiB/s)",
        f("/baseline/chacha20poly1305_mib_s"),
        f("/baseline/chacha20poly1305_rustcrypto_mib_s")
    );
        println!(
            "  AES-128-GCM, one core          {:>10} MiB/s  (ring; AES-256-GCM, noise's AESGCM, {} MiB/s)",
            f("/baseline/aes128gcm_mib_s"),
            f("/baseline/aes256gcm_mib_s")
        );
        println!(
            "  per 1,452-byte QUIC packet     {:>10} MiB/s ChaCha20-Poly1305, {} MiB/s AES-128-GCM",
            f("/baseline/chacha20poly1305_1452b_mib_s"),
            f("/baseline/aes128gcm_1452b_mib_s")
        );
    }
    if has("direct") {
        println!("\nTHROUGHPUT (one stream)");
        println!(
        "  direct TCP+noise+yamux         {:>10} MiB/s  ({} of raw TCP, {} of ChaCha20-Poly1305)",
        f("/direct/tcp_mib_s"),
        f("/direct/tcp_ratio_to_raw_tcp"),
        f("/direct/tcp_ratio_to_chacha20poly1305")
    );
        println!(
            "  ↳ noise sealed with            {:>10}        ({} of AES-256-GCM; with ChaCha20-Poly1305 {} MiB/s, ours/that {})",
            f("/machine/noise_cipher"),
            f("/direct/tcp_ratio_to_aes256gcm"),
            f("/direct/tcp_chachapoly_mib_s"),
            f("/direct/tcp_ratio_to_chachapoly")
        );
        println!(
            "  direct QUIC                    {:>10} MiB/s  ({} of direct TCP; MTU ceiling {}, and held to 1,452: {} MiB/s)",
            f("/direct/quic_mib_s"),
            f("/direct/quic_ratio_to_tcp"),
            f("/machine/quic_mtu_ceiling"),
            f("/direct/quic_1452_mib_s")
        );
        println!(
        "  CPU per MiB moved (all nodes)  direct TCP {} ms · relayed TCP {} ms · direct QUIC {} ms · relayed QUIC {} ms",
        f("/direct/tcp_cpu_ms_per_mib"),
        f("/relayed/tcp_cpu_ms_per_mib"),
        f("/direct/quic_cpu_ms_per_mib"),
        f("/relayed/quic_cpu_ms_per_mib")
    );
        println!(
        "  cores kept busy                direct TCP {} · relayed TCP {} · direct QUIC {} · relayed QUIC {}",
        f("/direct/tcp_cpu_cores"),
        f("/relayed/tcp_cpu_cores"),
        f("/direct/quic_cpu_cores"),
        f("/relayed/quic_cpu_cores")
    );
        println!(
            "  relayed TCP (via relay)        {:>10} MiB/s  ({} of direct TCP)",
            f("/relayed/tcp_mib_s"),
            f("/relayed/ratio_to_direct")
        );
        println!(
            "  relayed QUIC (via relay)       {:>10} MiB/s  ({} of direct QUIC)",
            f("/relayed/quic_mib_s"),
            f("/relayed/quic_ratio_to_direct_quic")
        );
        let runs = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        println!(
        "  per run (medians above)        direct TCP [{}] · relayed TCP [{}] MiB/s; relayed/direct [{}]",
        runs("/direct/tcp_runs_mib_s"),
        runs("/relayed/tcp_runs_mib_s"),
        runs("/relayed/ratio_to_direct_runs")
    );
        println!(
        "  relayed TCP, relay as its own process {} MiB/s ({} of direct); CPU per MiB: relay {} ms, endpoints {} ms (direct: {} ms)",
        f("/relayed/relay_process/tcp_mib_s"),
        f("/relayed/relay_process/ratio_to_direct"),
        f("/relayed/relay_process/relay_cpu_ms_per_mib"),
        f("/relayed/relay_process/endpoints_cpu_ms_per_mib"),
        f("/relayed/relay_process/direct_endpoints_cpu_ms_per_mib")
    );
        println!(
        "    → with every node on its own CPU: relayed ≈ {} of direct; one relay core forwards ≈ {} MiB/s",
        f("/relayed/relay_process/cpu_bound_ratio_own_cpus"),
        f("/relayed/relay_process/relay_mib_s_per_core")
    );
        println!("\nLATENCY (32-byte round trip, ms)");
        println!(
            "  direct   p50 {:>8}   p99 {:>8}",
            f("/latency_ms/direct_p50"),
            f("/latency_ms/direct_p99")
        );
        println!(
            "  relayed  p50 {:>8}   p99 {:>8}   (relay hop adds {} ms at p50)",
            f("/latency_ms/relayed_p50"),
            f("/latency_ms/relayed_p99"),
            f("/latency_ms/relay_hop_added_p50")
        );
    }
    if has("setup_ms") {
        println!("\nCONNECTION SET-UP (ms since the consumer wanted the stream)");
        for ledger in [
            "memory",
            "anvil",
            "anvil_1s_blocks",
            "anvil_1s_blocks_read_pending",
            "anvil_1s_blocks_read_pending_ws",
        ] {
            match v.pointer(&format!("/setup_ms/{ledger}")) {
                Some(Value::Object(m)) => {
                    let mut items: Vec<(&String, &Value)> = m.iter().collect();
                    items.sort_by_key(|(_, x)| x.as_u64().unwrap_or(u64::MAX));
                    let parts: Vec<String> =
                        items.iter().map(|(k, x)| format!("{k} {x}")).collect();
                    println!("  {ledger:<32} {}", parts.join(" · "));
                }
                _ => println!("  {ledger:<32} (not measured: anvil not installed)"),
            }
        }
    }
    if has("mxn") {
        println!("\nM×N SCALE");
        for (key, label) in [
            ("one_consumer_n_providers", "n"),
            ("one_provider_m_consumers", "m"),
        ] {
            if let Some(Value::Array(rows)) = v.pointer(&format!("/mxn/{key}")) {
                for r in rows {
                    println!(
                        "  {key:<26} {label}={:<3} aggregate {:>8} MiB/s  fairness (min/max) {}",
                        r[label], r["aggregate_mib_s"], r["fairness"]
                    );
                }
            }
        }
        println!(
            "  resident memory per connection (both ends, in-process): {} KiB",
            f("/mxn/rss_kib_per_connection")
        );
    }
    if has("live") {
        println!(
            "\nLIVE (16 KiB signed chunks at a fixed rate; lag = provider read → buyer write)"
        );
        for (key, label) in [("one_feed_m_buyers", "m"), ("one_buyer_n_feeds", "n")] {
            if let Some(Value::Array(rows)) = v.pointer(&format!("/live/{key}")) {
                for r in rows {
                    println!(
                        "  {key:<18} {label}={:<3} {:>5} MiB/s  lag p50 {:>8} ms  p99 {:>8} ms (worst {:>8})  fairness {}  failed {}",
                        r[label],
                        r["rate_mib_s"],
                        r["lag_ms_p50"],
                        r["lag_ms_p99"],
                        r["lag_ms_p99_worst"],
                        r["fairness"],
                        r["failed"]
                    );
                }
            }
        }
    }
    if has("peers") {
        println!("\nPEERS (same bytes over one stream, rounds interleaved with ours)");
        println!(
            "  stock rust-libp2p TCP+noise+yamux {} MiB/s ({} ms CPU/MiB)   ours {} MiB/s ({} ms CPU/MiB)   ours/stock {}",
            f("/peers/libp2p_tcp_mib_s"),
            f("/peers/libp2p_tcp_cpu_ms_per_mib"),
            f("/peers/ours_tcp_mib_s"),
            f("/peers/ours_tcp_cpu_ms_per_mib"),
            f("/peers/tcp_ratio_to_libp2p")
        );
        println!(
            "  stock rust-libp2p QUIC            {} MiB/s ({} ms CPU/MiB)   ours {} MiB/s ({} ms CPU/MiB)   ours/stock {}",
            f("/peers/libp2p_quic_mib_s"),
            f("/peers/libp2p_quic_cpu_ms_per_mib"),
            f("/peers/ours_quic_mib_s"),
            f("/peers/ours_quic_cpu_ms_per_mib"),
            f("/peers/quic_ratio_to_libp2p")
        );
        println!(
            "  ↳ ours held to a 1,452-byte MTU as they are: {} MiB/s ({} ms CPU/MiB)   ours/stock {}   ours/iroh {}",
            f("/peers/ours_quic_1452_mib_s"),
            f("/peers/ours_quic_1452_cpu_ms_per_mib"),
            f("/peers/quic_1452_ratio_to_libp2p"),
            f("/peers/quic_1452_ratio_to_iroh")
        );
        if v.pointer("/peers/iroh_mib_s").is_some_and(|x| !x.is_null()) {
            println!(
                "  iroh QUIC                         {} MiB/s ({} ms CPU/MiB)   ours {} MiB/s              ours/iroh {}",
                f("/peers/iroh_mib_s"),
                f("/peers/iroh_cpu_ms_per_mib"),
                f("/peers/ours_quic_mib_s"),
                f("/peers/quic_ratio_to_iroh")
            );
        } else {
            let why = v.pointer("/peers/iroh").and_then(Value::as_str);
            println!("  iroh: {}", why.unwrap_or("not measured"));
        }
    }
    if has("idle") {
        println!("\nIDLE (a relay process's resident memory)");
        println!(
            "  {} idle connections: {} KiB each; {} reservations on them: {} KiB each",
            f("/idle/peers"),
            f("/idle/rss_kib_per_connection"),
            f("/idle/peers"),
            f("/idle/rss_kib_per_reservation")
        );
        println!(
            "  {} idle QUIC connections: {} KiB each",
            f("/idle/peers"),
            f("/idle/rss_kib_per_quic_connection")
        );
    }
    if has("envelope") {
        println!("\nENVELOPES");
        println!(
            "  seal {}/s, open {}/s; request {} bytes, response {} bytes on the ledger",
            f("/envelope/seal_per_s"),
            f("/envelope/open_per_s"),
            f("/envelope/request_bytes"),
            f("/envelope/response_bytes")
        );
    }
    if has("direct") {
        println!("\nGOALS (issues #4 and #15)");
        for (key, label) in [
            (
                "direct_tcp_over_chacha20poly1305",
                "direct TCP / ChaCha20-Poly1305",
            ),
            ("relayed_tcp_over_direct_tcp", "relayed TCP / direct TCP"),
            ("direct_quic_over_direct_tcp", "direct QUIC / direct TCP"),
        ] {
            let g = |k: &str| f(&format!("/goals/{key}/{k}"));
            let verdict = match g("met") {
                Value::Bool(true) => "met",
                Value::Bool(false) => "NOT met in this run",
                _ => "not measured",
            };
            println!(
                "  {label:<32} {} (at least {}): {verdict}",
                g("value"),
                g("min")
            );
        }
    }
    println!("\n(total {} s)", f("/elapsed_s"));
}
