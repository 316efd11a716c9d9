//! Operating a node: the committed config files start real processes over
//! loopback sockets (flags given beside a file override it), and each
//! node's HTTP API, `/metrics`, `ledgermesh status` and `ledgermesh ping`
//! report the paths and bytes that exist.

use ledgermesh_e2e::procs::{event_is, keygen, project_root, Proc};
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_node::source::Source;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(name: &str) -> String {
    project_root()
        .join("config")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// The first TCP address a `listening` event names.
fn tcp_addr(listening: &serde_json::Value) -> String {
    listening["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
        .expect("a tcp listen address")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_two_providers_and_consumers_run_from_the_committed_config_files_and_report_their_paths(
) {
    let dir = temp_dir("operate-config");
    // The relay: config/relay.toml, listening on loopback instead of its
    // public port (a flag beside the file wins).
    let mut relay = Proc::start(
        "relay",
        &dir.0,
        &[
            "relay",
            "--config",
            &config("relay.toml"),
            "--json",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ],
    );
    let relay_api = api_of(&mut relay);
    let l = relay.wait_for("relay listening", WAIT, |v| event_is(v, "listening"));
    let relay_addr = format!("{}/p2p/{}", tcp_addr(&l), l["peer_id"].as_str().unwrap());

    // The provider: config/provider.toml's streams, reserving on the relay,
    // letting the consumer in by its ACL.
    let (pkey, pid) = keygen(&dir.0, "provider");
    let (ckey, cid) = keygen(&dir.0, "consumer");
    let (rkey, rid) = keygen(&dir.0, "relayed-consumer");
    let acl = dir.0.join("acl.toml");
    std::fs::write(
        &acl,
        format!(
            "[[allow]]\npeer = \"{cid}\"\nstreams = [\"sample\", \"ticks\"]\n\
             [[allow]]\npeer = \"{rid}\"\nstreams = [\"ticks\"]\n"
        ),
    )
    .unwrap();
    let mut provider = provider_from_config(
        &dir.0,
        "provider",
        &pkey,
        &relay_addr,
        &acl,
        &["--api", "127.0.0.1:0", "--ping-secs", "1"],
    );
    let provider_api = api_of(&mut provider);
    let l = provider.wait_for("provider listening", WAIT, |v| event_is(v, "listening"));
    let provider_addr = format!("{}/p2p/{pid}", tcp_addr(&l));
    provider.wait_for("the reservation", WAIT, |v| {
        event_is(v, "reservation_accepted")
            && relay_addr.ends_with(v["relay"].as_str().unwrap_or("-"))
    });
    provider.wait_for("provider following", WAIT, |v| {
        event_is(v, "ledger_following")
    });

    // A second provider from the same file.
    let (p2key, p2id) = keygen(&dir.0, "provider-2");
    let mut provider2 = provider_from_config(&dir.0, "provider-2", &p2key, &relay_addr, &acl, &[]);
    let l = provider2.wait_for("provider-2 listening", WAIT, |v| event_is(v, "listening"));
    let provider2_addr = format!("{}/p2p/{p2id}", tcp_addr(&l));
    provider2.wait_for("provider-2 following", WAIT, |v| {
        event_is(v, "ledger_following")
    });

    // The consumer: config/consumer.toml, wanting both providers' `sample`
    // (the file's `want` names a placeholder peer; the flags replace it).
    let out = dir.0.join("received");
    let (want1, want2) = (format!("{pid}/sample"), format!("{p2id}/sample"));
    let mut consumer = Proc::start(
        "consumer",
        &dir.0,
        &[
            "consume",
            "--config",
            &config("consumer.toml"),
            "--json",
            "--key",
            &ckey,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--want",
            &want1,
            &want2,
            "--provider-addr",
            &provider_addr,
            &provider2_addr,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let code = consumer.wait_exit(WAIT * 2);
    assert_eq!(code, 0, "consumer: {:#?}", consumer.seen);
    // provider.toml sells `sample=random:8M:7`.
    let expected = truth(&Source::Random {
        len: 8 << 20,
        seed: 7,
    })
    .await;
    for id in [&pid, &p2id] {
        assert_eq!(file_sha256(&out.join(id).join("sample")), expected);
    }
    provider2.stop();
    let relayed = relay.matching(|v| {
        event_is(v, "relay_reservation") && v["peer_id"] == pid && v["outcome"] == "accepted"
    });
    assert_eq!(
        relayed.len(),
        1,
        "the relay holds the provider's reservation"
    );

    // Two buyers follow the provider's live `ticks`: one direct, one held
    // on the relay (no hole punch).
    let relay_id = relay_addr.rsplit('/').next().unwrap().to_string();
    let direct_want = format!("{pid}/ticks");
    let mut direct = follower(&dir.0, "direct", &ckey, &direct_want, &provider_addr, &[]);
    let circuit = format!("{relay_addr}/p2p-circuit/p2p/{pid}");
    let mut relayed = follower(
        &dir.0,
        "relayed",
        &rkey,
        &direct_want,
        &circuit,
        // ChaCha20-Poly1305 only, as a stock peer: the statuses below tell it apart.
        &["--no-hole-punch", "--noise-cipher", "chachapoly"],
    );
    let direct_api = api_of(&mut direct);
    let relayed_api = api_of(&mut relayed);
    for f in [&mut direct, &mut relayed] {
        f.wait_for("the feed", WAIT, |v| event_is(v, "stream_opened"));
    }

    // `status --json` on the provider: each buyer's path, with an RTT once pinged.
    let status = wait_status(&provider_api, |s| {
        let path_of = |peer: &str| {
            s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["peer_id"] == peer && p["rtt_ms"].as_f64().is_some())
                .map(|p| (p["path"].clone(), p["via"].clone()))
        };
        path_of(&cid) == Some(("direct".into(), serde_json::Value::Null))
            && path_of(&rid) == Some(("relayed".into(), relay_id.clone().into()))
    });
    let peers = status["peers"].as_array().unwrap();
    for p in peers
        .iter()
        .filter(|p| p["peer_id"] == cid || p["peer_id"] == rid)
    {
        assert!(p["streams"].as_u64().unwrap() >= 1, "{p}");
        assert!(p["bytes_out"].as_u64().unwrap() > 0, "{p}");
        assert!(p["rate_out_bytes_s"].as_f64().is_some(), "{p}");
    }
    assert!(peers
        .iter()
        .all(|p| p["rtt_ms"].as_f64().unwrap_or(0.0) > 0.0 || p["peer_id"] != cid));
    // What seals each Noise connection: AES-256-GCM between two of our nodes
    // with AES instructions, ChaCha20-Poly1305 with the one that opted out
    // (inside the circuit, and on its own connection to the relay).
    let ours = if ledgermesh_node::swarm::aes_in_hardware() {
        "AESGCM"
    } else {
        "ChaChaPoly"
    };
    let cipher_of = |peers: &serde_json::Value, peer: &str| {
        peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_id"] == peer)
            .map(|p| p["noise_cipher"].clone())
            .unwrap_or_default()
    };
    let at_provider = get(&provider_api, "/api/v1/peers");
    assert_eq!(cipher_of(&at_provider, &cid), ours, "{at_provider}");
    assert_eq!(cipher_of(&at_provider, &rid), "ChaChaPoly", "{at_provider}");
    assert_eq!(cipher_of(&at_provider, &relay_id), ours, "{at_provider}");
    let at_relay = get(&relay_api, "/api/v1/peers");
    assert_eq!(cipher_of(&at_relay, &pid), ours, "{at_relay}");
    assert_eq!(cipher_of(&at_relay, &rid), "ChaChaPoly", "{at_relay}");

    // The table a person reads says the same.
    let table = run_cli(&["status", "--api", &provider_api]);
    let line = |peer: &str| {
        table
            .lines()
            .find(|l| l.starts_with(peer))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(&cid).contains("direct tcp"), "{table}");
    assert!(line(&rid).contains("relayed via"), "{table}");
    assert!(
        line(&rid).contains(&relay_id[relay_id.len() - 6..]),
        "{table}"
    );

    // /api/v1/status and /metrics report the same connections and bytes.
    let full = get(&provider_api, "/api/v1/status");
    let conns = full["connections"].as_array().unwrap();
    let count = |path: &str| conns.iter().filter(|c| c["path"] == path).count();
    let relayed_conn = conns.iter().find(|c| c["peer_id"] == rid).unwrap();
    assert_eq!(relayed_conn["via"], relay_id.as_str());
    assert!(
        relayed_conn["hop_to_relay"]["rtt_ms"].as_f64().is_some(),
        "a relayed connection shows our own hop to its relay: {relayed_conn}"
    );
    let streams_bytes: u64 = full["streams"]["active"]
        .as_array()
        .unwrap()
        .iter()
        .chain(full["streams"]["recent"].as_array().unwrap())
        .filter(|s| s["stream"] == "ticks" && s["direction"] == "out")
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert!(streams_bytes > 0, "{full}");
    let metrics = get_text(&provider_api, "/metrics");
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        metric("ledgermesh_connections{path=\"relayed\",transport=\"tcp\"}") as usize,
        count("relayed"),
        "{metrics}"
    );
    assert_eq!(
        metric("ledgermesh_connections{path=\"direct\",transport=\"tcp\"}") as usize,
        count("direct"),
        "{metrics}"
    );
    // libp2p's own metrics share the registry.
    assert!(metric("libp2p_ping_rtt_seconds_count") >= 1.0, "{metrics}");
    // Read after the status, so at least what the status counted.
    let out_bytes = metric("ledgermesh_stream_bytes_total{direction=\"out\",stream=\"ticks\"}");
    assert!(
        out_bytes >= streams_bytes as f64,
        "{out_bytes} < {streams_bytes}"
    );
    assert!(
        metric("ledgermesh_stream_bytes_total{direction=\"out\",stream=\"sample\"}")
            >= (8 << 20) as f64
    );

    // The relay's own view: the provider's reservation and the circuit.
    let relay_status = get(&relay_api, "/api/v1/status");
    assert!(relay_status["relay"]["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["peer_id"] == pid));
    assert!(
        relay_status["relay"]["circuits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["src"] == rid && c["dst"] == pid),
        "{relay_status}"
    );

    assert_eq!(relay_status["relay"]["hop_requests_dropped"], 0);
    assert!(
        get_text(&relay_api, "/metrics").contains("ledgermesh_relay_hop_requests_dropped_total 0")
    );

    // `ping` through each buyer: direct for one, through the relay for the other.
    let pong = |api: &str| -> serde_json::Value {
        let out = run_cli(&["ping", "--json", "-c", "1", "--api", api, &pid]);
        serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap()
    };
    let d = pong(&direct_api);
    assert_eq!(
        (d["direct"].clone(), d["path"].clone()),
        (true.into(), "direct".into()),
        "{d}"
    );
    assert!(d["rtt_ms"].as_f64().unwrap() > 0.0);
    let r = pong(&relayed_api);
    assert_eq!(
        (r["direct"].clone(), r["via"].clone()),
        (false.into(), relay_id.clone().into()),
        "{r}"
    );
    // The PeerId as `status` prints it, shortened, is taken; one that
    // matches no peer is refused, saying so.
    let shortened = format!("{}…{}", &pid[..8], &pid[pid.len() - 6..]);
    let said = run_cli(&["ping", "-c", "1", "--api", &relayed_api, &shortened]);
    assert!(
        said.starts_with(&format!("pong from {pid} in ")) && said.contains(", relayed via "),
        "{said}"
    );
    let unknown = std::process::Command::new(ledgermesh_e2e::procs::bin_path())
        .args(["ping", "-c", "1", "--api", &relayed_api, "12D3KooW…zzzzzz"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let why = String::from_utf8_lossy(&unknown.stderr);
    assert!(why.contains("no peer of this node matches it"), "{why}");

    // The dashboard, in headless Chromium: the route map draws both paths,
    // each hop coloured by its rating; a screenshot is left as an artifact.
    if let Some((driver, chromium)) = ledgermesh_e2e::procs::browser_available("dashboard") {
        let artifacts = project_root().join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let shot = artifacts.join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        let out = std::process::Command::new("node")
            .arg(project_root().join("tests/dashboard/check.cjs"))
            .arg(&driver)
            .arg(&chromium)
            .arg(format!("http://{provider_api}/"))
            .arg(&shot)
            .arg(format!("{cid}:direct"))
            .arg(format!("{rid}:relayed"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the dashboard check failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(page["errors"], serde_json::json!([]), "{page:#}");
        let routes = page["routes"].as_array().unwrap();
        let route = |peer: &str| routes.iter().find(|r| r["peer"] == peer).unwrap().clone();
        let d = route(&cid);
        assert_eq!(
            (d["path"].as_str(), d["hops"].as_array().unwrap().len()),
            (Some("direct"), 1),
            "{d}"
        );
        assert_eq!(d["cipher"], ours, "{d}");
        assert!(d["text"].as_str().unwrap().contains(ours), "{d}");
        let r = route(&rid);
        assert_eq!(r["cipher"], "ChaChaPoly", "{r}");
        assert_eq!(r["path"], "relayed");
        assert_eq!(r["via"], relay_id.as_str());
        let hops: Vec<&str> = r["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hop"].as_str().unwrap())
            .collect();
        assert_eq!(
            hops,
            ["relay", "peer"],
            "a relayed route is drawn as two hops: {r}"
        );
        // On loopback every measured hop is green.
        for h in d["hops"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r["hops"].as_array().unwrap())
        {
            assert_eq!(h["rating"], "green", "{page:#}");
        }
        assert!(page["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("ticks")));
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "a real screenshot"
        );
        eprintln!("dashboard screenshot: {}", shot.display());
    }

    for p in [&mut direct, &mut relayed, &mut provider, &mut relay] {
        p.stop();
    }
}

/// A provider from config/provider.toml on loopback, reserving on `relay`,
/// letting in whom `acl` lists.
fn provider_from_config(
    dir: &std::path::Path,
    name: &str,
    key: &str,
    relay: &str,
    acl: &std::path::Path,
    extra: &[&str],
) -> Proc {
    let provider_toml = config("provider.toml");
    let mut args = vec![
        "provide",
        "--config",
        &provider_toml,
        "--json",
        "--key",
        key,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--relay",
        relay,
        "--acl",
        acl.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::start(name, dir, &args)
}

/// The address of a node's API, from its `api_listening` event.
fn api_of(p: &mut Proc) -> String {
    let ev = p.wait_for("the API", WAIT, |v| event_is(v, "api_listening"));
    ev["addr"].as_str().unwrap().to_string()
}

/// A consumer following `want` from `addr` with its API on.
fn follower(
    dir: &std::path::Path,
    name: &str,
    key: &str,
    want: &str,
    addr: &str,
    extra: &[&str],
) -> Proc {
    let out = dir.join(format!("out-{name}"));
    let consumer_toml = config("consumer.toml");
    let mut args = vec![
        "consume",
        "--config",
        &consumer_toml,
        "--json",
        "--key",
        key,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--want",
        want,
        "--provider-addr",
        addr,
        "--out",
        out.to_str().unwrap(),
        "--api",
        "127.0.0.1:0",
        "--ping-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(name, dir, &refs)
}

/// Runs the `ledgermesh` binary to completion; its stdout (it must succeed).
fn run_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(ledgermesh_e2e::procs::bin_path())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledgermesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn get(api: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(api, path)).unwrap()
}

/// A plain HTTP GET on loopback.
fn get_text(api: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(api).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    body.to_string()
}

/// `status --json`, asked until `ready` holds (the first pings take a
/// second); the last answer.
fn wait_status(api: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&run_cli(&["status", "--json", "--api", api])).unwrap();
        if ready(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed both paths: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn consume_draws_progress_bars_on_a_terminal_only() {
    let dir = temp_dir("operate-progress");
    let (pkey, pid) = keygen(&dir.0, "provider");
    let (ckey, cid) = keygen(&dir.0, "consumer");
    let acl = dir.0.join("acl.toml");
    std::fs::write(
        &acl,
        format!("[[allow]]\npeer = \"{cid}\"\nstreams = \"*\"\n"),
    )
    .unwrap();
    // 1 MiB at 2 MiB/s: half a second of transfer, several bar redraws.
    let mut provider = Proc::start(
        "provider",
        &dir.0,
        &[
            "provide",
            "--json",
            "--key",
            &pkey,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--stream",
            "slow=paced:1M:2M:5",
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    let l = provider.wait_for("provider listening", WAIT, |v| event_is(v, "listening"));
    let provider_addr = format!("{}/p2p/{pid}", tcp_addr(&l));
    // Serving once it follows its ledger (a direct buyer dialing before
    // that could be told the stream protocol is not there yet).
    provider.wait_for("provider following", WAIT, |v| {
        event_is(v, "ledger_following")
    });
    let consume = |run: &str, extra: &str| -> String {
        format!(
            "{} consume --key {ckey} --listen /ip4/127.0.0.1/tcp/0 --provider-addr {provider_addr} \
             --want {pid}/slow --out {} {extra}",
            ledgermesh_e2e::procs::bin_path().display(),
            dir.0.join(run).display()
        )
    };
    // On a terminal (a pty from `script`): a bar for the stream.
    let tty = |cmd: String| {
        let out = std::process::Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .env("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "true")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = tty(consume("tty", ""));
    let prefix = format!("…{}/slow", &pid[pid.len() - 6..]);
    assert!(shown.contains(&prefix), "a bar names the stream: {shown}");
    assert!(
        shown.contains("1.00 MiB"),
        "a bar shows the length: {shown}"
    );
    assert!(shown.contains("ok   "), "the result line follows: {shown}");
    // The bar is cleared before it: nothing of it is left on that line.
    let before_ok = &shown[..shown.find("ok   ").unwrap()];
    let line_start = before_ok.rfind(['\r', '\n']).map_or(0, |i| i + 1);
    assert_eq!(
        without_ansi(&before_ok[line_start..]),
        "",
        "the result line starts clean: {shown:?}"
    );
    // With --json on a terminal: events only, no bar.
    let json = tty(consume("tty-json", "--json"));
    assert!(!json.contains(&prefix), "{json}");
    // Not a terminal: no bar.
    let out = std::process::Command::new("sh")
        .args(["-c", &consume("pipe", "")])
        .env("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "true")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let both = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!both.contains(&prefix) && both.contains("ok   "), "{both}");
    provider.stop();
}

/// docker-compose and what the test needs around it (python3 with PyYAML,
/// which Debian's docker-compose brings, and jq for the entrypoint); under
/// `CI=true` their absence is a failure.
fn compose_available() -> bool {
    let have = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("docker-compose", "version") && have("jq", "--version") {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("docker-compose or jq is missing and CI=true: run scripts/setup.sh (as root)");
    }
    eprintln!("SKIP compose: docker-compose or jq missing; run scripts/setup.sh as root");
    false
}

#[test]
fn the_compose_file_is_valid_and_every_service_runs_a_command_the_binary_accepts() {
    if !compose_available() {
        return;
    }
    let root = project_root();
    let compose = root.join("docker-compose.yml");
    let config = std::process::Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .arg("config")
        .env_remove("LEDGERMESH_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&config.stderr)
    );
    // The resolved file as JSON (PyYAML comes with Debian's docker-compose).
    let mut py = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(&config.stdout).unwrap();
    let resolved: serde_json::Value =
        serde_json::from_slice(&py.wait_with_output().unwrap().stdout).unwrap();
    let services = resolved["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chain",
            "consumer-1",
            "consumer-2",
            "provider-1",
            "provider-2",
            "relay"
        ]
    );

    // Each service's command goes through the real entrypoint, in the
    // order compose starts them, with a shared folder standing in for the
    // volume and a `ledgermesh` on PATH that runs `config check` on the
    // final command line (keygen runs for real: the PeerIds are real).
    let dir = temp_dir("compose");
    let shared = dir.0.join("shared");
    std::fs::create_dir_all(shared.join("chain")).unwrap();
    std::fs::write(
        shared.join("chain.json"),
        "{\"contract\":\"0x5FbDB2315678afecb367f032d93F642f64180aa3\"}\n",
    )
    .unwrap();
    for n in 1..=4 {
        std::fs::write(shared.join(format!("chain/ledger-{n}.key")), "00\n").unwrap();
    }
    let shim_dir = dir.0.join("bin");
    std::fs::create_dir_all(&shim_dir).unwrap();
    let checks = dir.0.join("checks.jsonl");
    let shim = shim_dir.join("ledgermesh");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nset -eu\nif [ \"$1\" = keygen ]; then exec {bin} \"$@\"; fi\n\
             for a in \"$@\"; do set -- \"$@\" \"$(printf '%s' \"$a\" | sed 's#^/etc/ledgermesh/#{cfg}/#')\"; shift; done\n\
             exec {bin} config check --json -- \"$@\" >> {checks}\n",
            bin = ledgermesh_e2e::procs::bin_path().display(),
            cfg = root.join("config").display(),
            checks = checks.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let order = [
        "chain",
        "relay",
        "provider-1",
        "provider-2",
        "consumer-1",
        "consumer-2",
    ];
    for name in order {
        let svc = &services[name];
        let command: Vec<String> = svc["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut run = std::process::Command::new("sh");
        run.arg(root.join("docker/entrypoint.sh"))
            .args(&command)
            .env_clear()
            .env("PATH", &path)
            .env("LM_SHARED", &shared);
        for (k, v) in svc["environment"].as_object().unwrap() {
            run.env(k, v.as_str().unwrap());
        }
        let out = run.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results: Vec<serde_json::Value> = std::fs::read_to_string(&checks)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), order.len(), "{results:#?}");
    let roles: Vec<&str> = results
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["devchain", "relay", "provide", "provide", "consume", "consume"]
    );
    assert!(results.iter().all(|r| r["ok"] == true));
    // What the entrypoint filled in reached the settings.
    let relay_id = std::fs::read_to_string(shared.join("relay.id")).unwrap();
    let p1 = std::fs::read_to_string(shared.join("provider-1.id")).unwrap();
    let p2 = std::fs::read_to_string(shared.join("provider-2.id")).unwrap();
    let consumer = &results[4]["settings"];
    assert_eq!(
        consumer["want"]["value"],
        serde_json::json!([
            format!("{}/sample", p1.trim()),
            format!("{}/ticks", p2.trim())
        ])
    );
    assert_eq!(consumer["want"]["from"], "env");
    assert_eq!(
        consumer["relay"]["value"],
        serde_json::json!([format!("/dns4/relay/tcp/4001/p2p/{}", relay_id.trim())])
    );
    assert_eq!(
        consumer["ledger"]["value"],
        "evm:http://chain:8545@0x5FbDB2315678afecb367f032d93F642f64180aa3"
    );
    assert_eq!(consumer["api_token"]["value"], "[redacted]");
    assert_eq!(results[1]["settings"]["listen"]["from"], "file");
}

/// `text` without its ANSI control sequences (ESC [ ... final letter).
fn without_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first line of `dir/NAME.log` (a process's stderr) holding every one
/// of `needles`, once it is there.
fn log_line(dir: &std::path::Path, name: &str, needles: &[&str]) -> String {
    let path = dir.join(format!("{name}.log"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: no line with {needles:?} in its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Without `--json`, each role tells a person what happens, one line per
/// event, with no colour codes in a file: a relay, a provider holding a
/// reservation on it, a consumer fetching from the provider and a stranger
/// refused.
#[test]
fn without_json_each_role_says_what_happens_in_plain_lines() {
    let dir = temp_dir("operate-human");
    let (rkey, rid) = keygen(&dir.0, "relay");
    let (pkey, pid) = keygen(&dir.0, "provider");
    let (ckey, cid) = keygen(&dir.0, "consumer");
    let (skey, _) = keygen(&dir.0, "stranger");
    let short = |id: &str| format!("{}…{}", &id[..8], &id[id.len() - 6..]);
    let acl = dir.0.join("acl.toml");
    std::fs::write(
        &acl,
        format!("[[allow]]\npeer = \"{cid}\"\nstreams = \"*\"\n"),
    )
    .unwrap();
    let listen = ["--local", "--listen", "/ip4/127.0.0.1/tcp/0"];
    let mut relay = Proc::start(
        "relay",
        &dir.0,
        &[&["relay", "--open", "--key", &rkey][..], &listen].concat(),
    );
    let line = log_line(&dir.0, "relay", &["relay reachable at /ip4/127.0.0.1/tcp/"]);
    let relay_addr = line
        .split("reachable at ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    log_line(&dir.0, "relay", &["listening on /ip4/127.0.0.1/tcp/"]);
    let mut provider = Proc::start(
        "provider",
        &dir.0,
        &[
            &[
                "provide",
                "--key",
                &pkey,
                "--relay",
                &relay_addr,
                "--stream",
                "feed=random:1M:3",
                "--acl",
                acl.to_str().unwrap(),
            ][..],
            &listen,
        ]
        .concat(),
    );
    let heard = log_line(&dir.0, "provider", &["listening on /ip4/127.0.0.1/tcp/"]);
    let provider_addr = format!(
        "{}/p2p/{pid}",
        heard
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split(", ")
            .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
            .unwrap()
            .trim()
    );
    log_line(
        &dir.0,
        "provider",
        &[&format!("relay {} holds our reservation", short(&rid))],
    );
    log_line(
        &dir.0,
        "relay",
        &[&format!("reservation of {} accepted", short(&pid))],
    );
    let out = dir.0.join("received");
    let fetch = |name: &str, key: &str| {
        Proc::start(
            name,
            &dir.0,
            &[
                &[
                    "consume",
                    "--key",
                    key,
                    "--provider-addr",
                    &provider_addr,
                    "--want",
                    &format!("{pid}/feed"),
                    "--out",
                    out.to_str().unwrap(),
                ][..],
                &listen,
            ]
            .concat(),
        )
    };
    let mut consumer = fetch("consumer", &ckey);
    assert_eq!(consumer.wait_exit(WAIT), 0);
    log_line(
        &dir.0,
        "consumer",
        &[&format!("connected to {}: direct tcp", short(&pid))],
    );
    log_line(
        &dir.0,
        "consumer",
        &[
            &format!("{}/feed done: 1.0 MiB in ", short(&pid)),
            ", verified",
        ],
    );
    log_line(
        &dir.0,
        "provider",
        &[&format!(
            "served feed to {}: 1.0 MiB from byte 0",
            short(&cid)
        )],
    );
    let mut stranger = fetch("stranger", &skey);
    assert_eq!(stranger.wait_exit(WAIT), 1);
    log_line(&dir.0, "provider", &["refused feed to ", "not_allowed"]);
    for name in ["relay", "provider", "consumer", "stranger"] {
        let text = std::fs::read_to_string(dir.0.join(format!("{name}.log"))).unwrap();
        assert!(
            !text.contains('\x1b'),
            "{name}: no colour codes into a file"
        );
    }
    provider.stop();
    relay.stop();
}
