//! The `ledgermesh` binary as a user runs it: real processes, real sockets.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ledgermesh"));
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "lm-cli-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = temp("keygen");
    let key = dir.join("node.key");
    let out = bin().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer = String::from_utf8(out.stdout).unwrap();
    assert!(
        peer.trim().starts_with("12D3KooW"),
        "prints an Ed25519 PeerId: {peer}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let before = std::fs::read(&key).unwrap();
    let again = bin().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is untouched");
    let forced = bin()
        .args(["keygen", "--force", "--json", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(forced.status.success());
    let v: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_ne!(
        v["peer_id"].as_str().unwrap(),
        peer.trim(),
        "--force makes a new identity"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_key_file_is_a_clear_error() {
    let out = bin()
        .args([
            "relay",
            "--key",
            "/nonexistent/ledgermesh.key",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found") && err.contains("ledgermesh keygen"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_explained() {
    let out = bin()
        .args([
            "provide",
            "--stream",
            "../etc=random:1",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad stream spec"));
    let out = bin()
        .args(["consume", "--want", "not-a-peer/feed", "--out", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad peer id"));
    let out = bin()
        .args([
            "provide",
            "--ledger",
            "carrier-pigeon",
            "--stream",
            "a=random:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown ledger spec"));
}

#[test]
fn demo_delivers_every_stream_verified_and_upgrades_the_relayed_provider() {
    let out = bin()
        .args(["demo", "--json", "--bytes", "2M"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its log goes to a pipe here: plain text, no colour codes.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines().any(|l| l.contains(" INFO ")),
        "the demo logs: {log}"
    );
    assert!(!log.contains('\x1b'), "no ANSI codes into a pipe");
    let last = stdout.lines().last().expect("output");
    let summary: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(summary["event"], "demo_summary");
    assert_eq!(summary["ok"], true);
    let streams = summary["streams"].as_array().unwrap();
    assert_eq!(
        streams.len(),
        10,
        "2 consumers × (3 feeds + 1 log + 1 live ticks)"
    );
    for s in streams {
        assert_eq!(s["verified"], true, "{s}");
        assert!(s["bytes"].as_u64().unwrap() > 0);
    }
    // The live feed: both consumers followed it for 16 KiB of signed chunks.
    let live: Vec<_> = streams.iter().filter(|s| s["stream"] == "ticks").collect();
    assert_eq!(live.len(), 2);
    for s in live {
        assert_eq!(s["bytes"], 16 << 10, "{s}");
        assert!(s["live"]["chunks"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["live"]["gaps"], 0, "{s}");
    }
    let conns = summary["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 6, "2 consumers × 3 providers");
    let relayed: Vec<_> = conns.iter().filter(|c| c["path"] == "relayed").collect();
    assert_eq!(
        relayed.len(),
        2,
        "both consumers reach provider-3 through the relay first"
    );
    for c in relayed {
        assert_eq!(c["provider"], "provider-3");
        assert_eq!(c["upgraded"], true, "DCUtR upgrades it: {c}");
    }
    // Both consumers paid priced provider-2 for its 2 MiB feed at 1 gwei per
    // MiB, and the claims match the vouchers.
    let payments = summary["payments"].as_array().unwrap();
    let to_p2: Vec<_> = payments
        .iter()
        .filter(|p| p["payee"] == "provider-2")
        .collect();
    assert_eq!(to_p2.len(), 2, "{payments:?}");
    for p in to_p2 {
        assert_eq!(p["paid_wei"], "2000000000", "{p}");
        assert_eq!(p["claimed_wei"], p["paid_wei"], "{p}");
        assert_eq!(p["bytes_metered"], 2 << 20, "{p}");
        // The reconciliation: the payee's meter, its highest voucher and the
        // payer's own agree to the wei; nothing is left unclaimed.
        assert_eq!(p["owed_wei"], p["paid_wei"], "{p}");
        assert_eq!(p["payer_voucher_wei"], p["paid_wei"], "{p}");
        assert_eq!(p["agree"], true, "{p}");
        assert_eq!(p["unclaimed_wei"], "0", "{p}");
    }
    // The relay-only provider paid the relay for the circuits it used.
    assert!(
        payments
            .iter()
            .any(|p| p["payee"] == "relay" && p["agree"] == true),
        "{payments:?}"
    );
    // Each consumer found its public address by peer consensus (relay + 2 public providers).
    // Its observers are written by TCP address and it listens on QUIC too:
    // a TCP verdict, then a QUIC one from asking them over QUIC as well.
    let public = summary["public_addresses"].as_array().unwrap();
    let on = |prefix: &str| -> Vec<&serde_json::Value> {
        (public.iter())
            .filter(|p| p["addr"].as_str().is_some_and(|a| a.starts_with(prefix)))
            .collect()
    };
    let (tcp, quic) = (on("/ip4/127.0.0.1/tcp/"), on("/ip4/127.0.0.1/udp/"));
    assert_eq!(
        (tcp.len(), quic.len(), public.len()),
        (2, 2, 4),
        "{public:?}"
    );
    for p in public {
        assert_eq!(p["mapping"], "endpoint-independent", "{p}");
        assert_eq!(p["observers"], 3, "{p}");
        assert_eq!(p["agreeing"], 3, "{p}");
    }
    for p in quic {
        assert!(p["addr"].as_str().unwrap().ends_with("/quic-v1"), "{p}");
    }
    // Grants: each consumer holds one per stream it bought, nobody else any.
    let grants = summary["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 10, "{grants:?}");
    assert!(grants
        .iter()
        .all(|g| g["consumer"].as_str().unwrap().starts_with("consumer-")
            && g["expires_ms"].as_u64().unwrap() > 0));
    // The stranger that posted no request was refused and got nothing.
    assert_eq!(summary["stranger_refused"], true);
    let refusals = summary["refusals"].as_array().unwrap();
    assert!(
        refusals
            .iter()
            .any(|r| r["peer"] == "stranger" && r["reason"] == "not_allowed"),
        "{refusals:?}"
    );
    // Every line before the summary is an event with a node and a name.
    for line in stdout.lines().take(stdout.lines().count() - 1) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["event"].is_string() && v["node"].is_string(), "{line}");
    }
}

/// `ledgermesh bench --json` prints one object with every figure the
/// benchmark promises, as numbers (tiny transfers: this checks the contract
/// and that every section runs, not the speed).
#[test]
fn bench_json_has_every_figure() {
    let out = bin()
        .args(["bench", "--quick", "--json", "--rounds", "1"])
        .args(["--bytes", &(16u64 << 20).to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let number = |p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{p} is not a number in {v}"))
    };
    for p in [
        "/baseline/tcp_loopback_mib_s",
        "/baseline/chacha20poly1305_mib_s",
        "/baseline/aes256gcm_mib_s",
        "/direct/tcp_mib_s",
        "/direct/tcp_chachapoly_mib_s",
        "/direct/tcp_ratio_to_chachapoly",
        "/direct/quic_mib_s",
        "/direct/quic_ratio_to_tcp",
        "/direct/quic_1452_mib_s",
        "/relayed/tcp_mib_s",
        "/relayed/ratio_to_direct",
        "/relayed/relay_process/tcp_mib_s",
        "/relayed/relay_process/relay_cpu_ms_per_mib",
        "/mxn/rss_kib_per_connection",
        "/envelope/seal_per_s",
        "/envelope/open_per_s",
        "/peers/libp2p_tcp_mib_s",
        "/peers/libp2p_quic_mib_s",
        "/peers/tcp_ratio_to_libp2p",
        "/peers/quic_ratio_to_libp2p",
        "/peers/ours_quic_1452_mib_s",
        "/peers/quic_1452_ratio_to_libp2p",
        "/payments/vouchers_signed_per_s",
        "/payments/vouchers_verified_per_s",
        "/payments/paid_ratio_to_free",
        "/payments/relayed_paid_ratio_to_free",
        "/payments/settlement_overhead",
        "/payments/gas_per_call/claim",
        "/payments/loop_worst_time_ratio_to_free",
    ] {
        assert!(number(p) > 0.0, "{p} = {}", number(p));
    }
    for p in [
        "/idle/rss_kib_per_connection",
        "/idle/rss_kib_per_reservation",
    ] {
        assert!(number(p) >= 0.0, "{p} = {}", number(p));
    }
    assert_eq!(number("/idle/peers"), 200.0);
    // Our nodes seal Noise frames with AES-256-GCM where the CPU has AES.
    let aes = v
        .pointer("/machine/aes_in_hardware")
        .and_then(|a| a.as_bool());
    let cipher = v.pointer("/machine/noise_cipher").and_then(|c| c.as_str());
    assert_eq!(
        cipher,
        Some(if aes.expect("machine.aes_in_hardware") {
            "AESGCM"
        } else {
            "ChaChaPoly"
        })
    );
    assert_eq!(number("/machine/quic_mtu_ceiling"), 8952.0);
    for p in [
        "/latency_ms/direct_p50",
        "/latency_ms/direct_p99",
        "/latency_ms/relayed_p50",
        "/latency_ms/relayed_p99",
    ] {
        assert!(number(p) >= 0.0);
    }
    for goal in [
        "direct_tcp_over_chacha20poly1305",
        "relayed_tcp_over_direct_tcp",
        "direct_quic_over_direct_tcp",
    ] {
        let met = v.pointer(&format!("/goals/{goal}/met"));
        assert!(met.is_some_and(|m| m.is_boolean()), "goal {goal}: {met:?}");
    }
    assert!(number("/envelope/request_bytes") > 100.0);
    assert!(number("/envelope/response_bytes") > 100.0);
    let memory = v
        .pointer("/setup_ms/memory")
        .and_then(|m| m.as_object())
        .expect("setup_ms.memory");
    for phase in [
        "request_seen_by_provider",
        "response_seen_by_consumer",
        "relayed_connected",
        "first_byte",
    ] {
        assert!(
            memory.get(phase).and_then(|x| x.as_u64()).is_some(),
            "phase {phase} in {memory:?}"
        );
    }
    // With anvil installed (the test command installs it), the same phases
    // on a chain mining one block a second: the response waits for a block.
    // The same with read-pending and websocket wake-ups: every phase there.
    for row in ["anvil_1s_blocks", "anvil_1s_blocks_read_pending_ws"] {
        let Some(chain) = v
            .pointer(&format!("/setup_ms/{row}"))
            .filter(|c| !c.is_null())
        else {
            continue;
        };
        let at = |p: &str| {
            chain[p]
                .as_u64()
                .unwrap_or_else(|| panic!("{p} in {chain}"))
        };
        assert!(at("response_seen_by_consumer") >= at("request_seen_by_provider"));
        assert!(
            at("first_byte") >= at("response_seen_by_consumer"),
            "{chain}"
        );
    }
    // Live: one feed to M buyers, one buyer on N feeds; every follower got
    // its bytes, with its lag and the spread between followers.
    for (key, label) in [("one_feed_m_buyers", "m"), ("one_buyer_n_feeds", "n")] {
        let rows = v
            .pointer(&format!("/live/{key}"))
            .and_then(|r| r.as_array())
            .expect(key);
        let ns: Vec<u64> = rows.iter().filter_map(|r| r[label].as_u64()).collect();
        assert_eq!(ns, [10, 50], "{key}");
        for r in rows {
            assert_eq!(r["failed"], 0, "{r}");
            let (p50, p99) = (
                r["lag_ms_p50"].as_f64().unwrap(),
                r["lag_ms_p99"].as_f64().unwrap(),
            );
            assert!(p50 > 0.0 && p99 >= p50, "{r}");
            let fairness = r["fairness"].as_f64().unwrap();
            assert!(fairness > 0.0 && fairness <= 1.0, "{r}");
        }
    }
    for (key, label) in [
        ("one_consumer_n_providers", "n"),
        ("one_provider_m_consumers", "m"),
    ] {
        let rows = v
            .pointer(&format!("/mxn/{key}"))
            .and_then(|r| r.as_array())
            .expect(key);
        let ns: Vec<u64> = rows.iter().filter_map(|r| r[label].as_u64()).collect();
        assert_eq!(ns, [1, 10, 50], "{key}");
        for r in rows {
            let fairness = r["fairness"].as_f64().unwrap();
            assert!(r["aggregate_mib_s"].as_f64().unwrap() > 0.0);
            assert!((0.0..=1.0).contains(&fairness), "fairness {fairness}");
        }
    }
}

/// The repository's root, where the sample config files live.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `config check --json`: exit code, the JSON object (when it printed
/// one), and stderr.
fn config_check(args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let out = bin()
        .current_dir(root())
        .args(["config", "check", "--json"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_committed_sample_config_is_accepted_by_its_role() {
    for (file, role, key, value) in [
        (
            "config/relay.toml",
            "relay",
            "listen",
            serde_json::json!(["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]),
        ),
        (
            "config/provider.toml",
            "provide",
            "live_buffer",
            serde_json::json!("16M"),
        ),
        (
            "config/consumer.toml",
            "consume",
            "out",
            serde_json::json!("received"),
        ),
    ] {
        let (code, v, err) = config_check(&[file], &[]);
        assert_eq!(code, 0, "{file}: {err}");
        assert_eq!(v["ok"], true);
        assert_eq!(v["role"], role, "{file}");
        assert_eq!(v["settings"][key]["value"], value, "{file}: {v}");
        assert_eq!(v["settings"][key]["from"], "file", "{file}");
        assert_eq!(v["settings"]["audit_keep"]["from"], "default", "{file}");
        // The samples signal in memory: fine for one process, and said so.
        let warned = v["warnings"].as_array().unwrap();
        assert_eq!(
            warned.iter().any(|w| w
                .as_str()
                .unwrap()
                .contains("lives inside this one process")),
            v["settings"]["ledger"]["value"] == "memory",
            "{file}: {v}"
        );
    }
}

/// `config sample ROLE`'s output.
fn sample(role: &str) -> String {
    let out = bin().args(["config", "sample", role]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_committed_samples_are_what_config_sample_writes() {
    for (file, role) in [
        ("config/relay.toml", "relay"),
        ("config/provider.toml", "provide"),
        ("config/consumer.toml", "consume"),
    ] {
        let committed = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            committed == sample(role),
            "{file} is not what `ledgermesh config sample {role}` writes: \
             regenerate it with `ledgermesh config sample {role} > {file}`"
        );
    }
}

#[test]
fn every_key_a_sample_shows_commented_is_accepted_when_uncommented() {
    let dir = temp("config-uncommented");
    let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    for role in ["relay", "provide", "consume", "nc", "echo", "vpn"] {
        let text = sample(role);
        let setting = |l: &str| {
            let l = l.trim_start_matches("# ");
            l.split_once(" = ")
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(|(k, _)| k.to_string())
        };
        let mut keys = vec![];
        let uncommented: String = text
            .lines()
            .map(|l| match setting(l) {
                Some(k) if k != "role" => {
                    keys.push(k);
                    format!("{}\n", l.trim_start_matches("# "))
                }
                _ => format!("{l}\n"),
            })
            .collect();
        assert!(keys.len() > 20, "{role}: {keys:?}");
        let path = dir.join(format!("{role}.toml"));
        std::fs::write(&path, uncommented).unwrap();
        let f = path.to_str().unwrap();
        let target = format!("{peer}/s");
        let args: Vec<&str> = match role {
            // nc's stream is no key: it goes on the command line.
            "nc" => vec![f, "--", "nc", &target],
            _ => vec![f],
        };
        let (code, v, err) = config_check(&args, &[]);
        assert_eq!(code, 0, "{role}: {err}");
        for k in &keys {
            assert_eq!(v["settings"][k]["from"], "file", "{role}: {k}: {v}");
        }
    }
}

#[test]
fn file_values_fill_the_typed_settings_and_what_a_role_needs_is_checked_after_the_file() {
    let dir = temp("config-typed");
    let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    // A want and an out from the file are what consume needs; sizes and a
    // price beyond TOML's integers read as typed.
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "role = \"consume\"\nwant = \"{peer}/a\"\nout = \"o\"\nmax_bytes = \"2G\"\n\
             max_price_per_mib = \"100000000000000000000000\"\nuntil = \"90s\"\n"
        ),
    )
    .unwrap();
    let (code, v, err) = config_check(&[file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let s = &v["settings"];
    assert_eq!(s["want"]["value"], serde_json::json!([format!("{peer}/a")]));
    assert_eq!(s["max_bytes"]["value"], "2G");
    assert_eq!(s["max_price_per_mib"]["value"], "100000000000000000000000");
    assert_eq!(s["until"]["value"], "90s");
    // Without `out` (or `listen_local`) it is refused, naming both.
    std::fs::write(&file, format!("role = \"consume\"\nwant = \"{peer}/a\"\n")).unwrap();
    let (code, _, err) = config_check(&[file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--out") && err.contains("listen_local"),
        "{err}"
    );
    // An empty list is what no command line can say: refused, not "no
    // listener at all".
    std::fs::write(
        &file,
        format!("role = \"consume\"\nwant = \"{peer}/a\"\nout = \"o\"\nlisten = []\n"),
    )
    .unwrap();
    let (code, _, err) = config_check(&[file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("key `listen`: takes at least 1"), "{err}");
    let (code, _, err) = config_check(&[file.to_str().unwrap()], &[("LEDGERMESH_LISTEN", ",")]);
    assert_eq!(code, 2, "{err}");
    // A file's `allow` beside a flag's `--open`: one or the other.
    let relay = dir.join("r.toml");
    std::fs::write(&relay, "role = \"relay\"\nallow = \"allow.toml\"\n").unwrap();
    let (code, _, err) = config_check(&[relay.to_str().unwrap(), "--", "relay", "--open"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("exclude each other"), "{err}");
}

#[test]
fn config_layers_go_file_then_environment_then_flags() {
    let dir = temp("config-layers");
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        "role = \"relay\"\nmax_connections = 5\nmax_connections_per_peer = 3\nmax_circuits_per_ip = 4\nopen = true\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [
        ("LEDGERMESH_MAX_CONNECTIONS_PER_PEER", "6"),
        ("LEDGERMESH_MAX_CIRCUITS_PER_IP", "7"),
    ];
    let (code, v, err) = config_check(&[f, "--", "relay", "--max-circuits-per-ip", "9"], &env);
    assert_eq!(code, 0, "{err}");
    let s = &v["settings"];
    assert_eq!(s["max_connections"]["value"], "5");
    assert_eq!(s["max_connections"]["from"], "file");
    assert_eq!(s["max_connections_per_peer"]["value"], "6");
    assert_eq!(s["max_connections_per_peer"]["from"], "env");
    assert_eq!(s["max_circuits_per_ip"]["value"], "9");
    assert_eq!(s["max_circuits_per_ip"]["from"], "flag");
    assert_eq!(s["open"]["value"], "true");
    assert_eq!(s["open"]["from"], "file");
    assert_eq!(s["max_reservations_per_ip"]["from"], "default");
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_the_file() {
    let dir = temp("config-bad");
    let cases = [
        (
            "unknown.toml",
            "role = \"relay\"\nmax_streams = 3\n",
            vec![
                "key `max_streams`",
                "unknown key for `ledgermesh relay`",
                "max_connections",
            ],
        ),
        (
            "value.toml",
            "role = \"provide\"\nmax_streams = \"lots\"\n",
            vec!["key `max_streams`", "invalid value 'lots'"],
        ),
        (
            "bool.toml",
            "role = \"relay\"\nopen = \"maybe\"\n",
            vec!["key `open`", "expected true or false"],
        ),
        (
            "many.toml",
            "role = \"relay\"\nmax_connections = [1, 2]\n",
            vec!["key `max_connections`", "takes one value"],
        ),
        (
            "syntax.toml",
            "role = \"relay\"\nlisten = [\n",
            vec!["syntax.toml", "line 2"],
        ),
        (
            "norole.toml",
            "max_connections = 5\n",
            vec!["no `role` key", "role = \"relay\""],
        ),
    ];
    for (name, text, wants) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = config_check(&[path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(
            err.contains(name),
            "{name}: the error names the file: {err}"
        );
        for w in wants {
            assert!(err.contains(w), "{name}: wanted {w:?} in: {err}");
        }
    }
    // A role given the wrong role's file, and a file that is not there.
    let out = bin()
        .current_dir(root())
        .args(["provide", "--config", "config/relay.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config/relay.toml") && err.contains("not `ledgermesh provide`"),
        "{err}"
    );
    let out = bin()
        .args(["relay", "--config"])
        .arg(dir.join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent.toml: cannot read it"), "{err}");
}

/// A relay with its API on loopback; the API's address from its
/// `api_listening` event. Killed when dropped.
struct ApiRelay(std::process::Child, String);

impl Drop for ApiRelay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_with_api(extra: &[&str]) -> ApiRelay {
    use std::io::BufRead;
    let mut child = bin()
        .args([
            "relay",
            "--json",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        if v["event"] == "api_listening" {
            return ApiRelay(child, v["addr"].as_str().unwrap().to_string());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the relay never said where its API is");
}

#[test]
fn the_api_refuses_a_missing_or_wrong_token_and_an_open_address_without_one() {
    let token = "0123456789abcdef0123";
    let relay = relay_with_api(&["--api-token", token]);
    let status = |extra: &[&str]| {
        bin()
            .args(["status", "--json", "--api", &relay.1])
            .args(extra)
            .env_remove("LEDGERMESH_API_TOKEN")
            .output()
            .unwrap()
    };
    let none = status(&[]);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("401") && err.contains("Authorization: Bearer"),
        "{err}"
    );
    let wrong = status(&["--api-token", "fedcba9876543210fedc"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong API token"));
    let right = status(&["--api-token", token]);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&right.stdout).unwrap();
    assert_eq!(v["role"], "relay");
    drop(relay);

    // Off loopback: refused at start without a token, or with a short one.
    for (args, want) in [
        (vec!["--api", "0.0.0.0:0"], "not a loopback address"),
        (
            vec!["--api", "127.0.0.1:0", "--api-token", "short"],
            "shorter than 16",
        ),
    ] {
        let out = bin()
            .args(["relay", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&args)
            .env_remove("LEDGERMESH_API_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want) && err.contains("--api"), "{err}");
    }
    // No node there: the status command says what to do.
    let out = bin()
        .args(["status", "--api", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the node running with --api"));
}

#[test]
fn the_api_holds_a_bounded_number_of_connections_and_serves_the_next_when_one_closes() {
    use std::io::{Read, Write};
    let relay = relay_with_api(&[]);
    // 128 connections that never send a request hold every slot.
    let mut held: Vec<std::net::TcpStream> = (0..128)
        .map(|_| std::net::TcpStream::connect(&relay.1).unwrap())
        .collect();
    let mut next = std::net::TcpStream::connect(&relay.1).unwrap();
    write!(
        next,
        "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    next.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = next.read(&mut buf);
    assert!(
        early.is_err(),
        "answered while every slot was held: {early:?}"
    );
    // One closes: the waiting connection is taken and answered.
    drop(held.pop());
    next.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    next.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
}

#[test]
fn the_api_answers_only_its_own_host_and_origin_and_a_ping_is_a_post() {
    use std::io::{Read, Write};
    let relay = relay_with_api(&["--api-host", "node.lan"]);
    let ask = |head: &str| {
        let mut c = std::net::TcpStream::connect(&relay.1).unwrap();
        write!(c, "{head}Connection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    };
    let status = "GET /api/v1/status HTTP/1.1\r\n";
    // A page that made its own name resolve here (DNS rebinding).
    let a = ask(&format!("{status}Host: rebind.example:7001\r\n"));
    assert!(a.starts_with("HTTP/1.1 421"), "{a}");
    assert!(a.contains("--api-host"), "{a}");
    // Another site's page, through the operator's browser.
    let a = ask(&format!(
        "{status}Host: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
    ));
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");
    // The node's own names and addresses.
    for host in ["127.0.0.1", "localhost:1", "node.lan:7001", "[::1]:7001"] {
        let a = ask(&format!("{status}Host: {host}\r\n"));
        assert!(a.starts_with("HTTP/1.1 200"), "{host}: {a}");
    }
    let a = ask(&format!(
        "{status}Host: 127.0.0.1\r\nOrigin: http://127.0.0.1:7001\r\n"
    ));
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    // A ping sends packets: not on a GET.
    let peer = "12D3KooWGws8R4tLsQLnoZpvmn1eFbvFXwyj5rW1ySSh2A7QFa4h";
    let a = ask(&format!(
        "GET /api/v1/ping/{peer} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    ));
    assert!(a.starts_with("HTTP/1.1 405"), "{a}");
    let a = ask(&format!(
        "POST /api/v1/ping/{peer} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    ));
    assert!(!a.starts_with("HTTP/1.1 405"), "{a}");
}

#[test]
fn a_private_address_without_local_is_refused_naming_the_flag() {
    let dir = temp("private-addrs");
    let key = dir.join("c.key");
    let id = bin()
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    let id = String::from_utf8(id.stdout).unwrap().trim().to_string();
    let addr = format!("/ip4/127.0.0.1/tcp/9/p2p/{id}");
    let want = format!("{id}/feed");
    let out_dir = dir.join("out");
    for flag in ["--provider-addr", "--relay"] {
        let out = bin()
            .env_remove("LEDGERMESH_ALLOW_PRIVATE_ADDRS")
            .args(["consume", "--key", key.to_str().unwrap(), "--want", &want])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .args([flag, &addr])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag} {addr}: not a public address"))
                && err.contains("--local"),
            "{flag}: {err}"
        );
    }
    // With --local the same address is taken (and simply not answered).
    let out = bin()
        .args([
            "consume",
            "--local",
            "--key",
            key.to_str().unwrap(),
            "--want",
            &want,
        ])
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .args(["--provider-addr", &addr, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "--local is a flag of consume");
}

/// The binary's log goes through the redacting writer (whose redaction is
/// tested in `logs.rs`): a loopback address names nobody, so a lab's
/// `listening on` line stays whole, to be copied, with no hint.
#[test]
fn the_log_keeps_loopback_addresses_whole() {
    use std::io::BufRead;
    let listening_line = |extra: &[&str]| {
        let mut child = bin()
            .env_remove("RUST_LOG")
            .args(["relay", "--local", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let line = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening on"));
        let _ = child.kill();
        let _ = child.wait();
        line.expect("the relay logs where it listens")
    };
    let plain = listening_line(&[]);
    assert!(
        plain.contains("listening on /ip4/127.0.0.1/tcp/")
            && plain.contains("peer=12D3KooW")
            && !plain.contains("<ip>")
            && !plain.contains("--log-addrs"),
        "{plain}"
    );
    let shown = listening_line(&["--log-addrs"]);
    assert!(shown.contains("/ip4/127.0.0.1/tcp/"), "{shown}");
}

#[test]
fn a_vpn_address_comes_from_the_peer_id_alone() {
    let peer = "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7";
    let out = bin().args(["vpn", "address", peer]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "fda2:12b9:3212:88b2:7717:7a8f:aeef:43c3"
    );
    let out = bin()
        .args(["vpn", "address", peer, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["peer_id"], peer);
    assert_eq!(v["address"], "fda2:12b9:3212:88b2:7717:7a8f:aeef:43c3");
    // Not a PeerId: refused as a bad argument.
    let out = bin().args(["vpn", "address", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));
}

#[test]
fn vpn_without_cap_net_admin_says_what_it_needs() {
    // A user without the capability: nobody, through setpriv (util-linux).
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let root = nix::unistd::Uid::effective().is_root();
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !root || !setpriv.exists() {
        assert!(!ci, "this test needs root and setpriv under CI=true");
        eprintln!("SKIP vpn_without_cap_net_admin_says_what_it_needs: needs root and setpriv");
        return;
    }
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ledgermesh"))
        .args(["vpn", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot create the TUN device ledgermesh0: it needs CAP_NET_ADMIN"),
        "{err}"
    );
}
