//! `ledgermesh status` and `ledgermesh ping`: a running node, asked
//! through its HTTP API (`--api`).

use anyhow::Context;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where `status` and `ping` look when not told: the address the sample
/// configs give the API.
pub const DEFAULT_API: &str = "http://127.0.0.1:7001";

/// The largest answer read from the API.
const MAX_ANSWER: u64 = 16 << 20;

/// GETs `path` from the API at `api` (`http://HOST:PORT` or `HOST:PORT`)
/// and parses the JSON answer.
pub async fn get_json(api: &str, token: Option<&str>, path: &str) -> anyhow::Result<Value> {
    request_json(api, token, "GET", path).await
}

/// `method path` on the node's API (`POST` for what acts: a ping).
pub async fn request_json(
    api: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> anyhow::Result<Value> {
    let host = api
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if api.starts_with("https://") {
        anyhow::bail!("--api {api}: the node's API speaks plain HTTP (put TLS in front of it with a proxy, and give the proxy's http address here)");
    }
    let io = async {
        let mut conn = tokio::net::TcpStream::connect(&host)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the node's API at {host}: is the node running with --api {host}?"
                )
            })?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.take(MAX_ANSWER).read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .with_context(|| format!("the node's API at {host} did not answer within 30 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the API's answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = dechunk(&head, &raw[split + 4..]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("the API's answer has no status")?;
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("the API answered {code} with something that is not JSON"))?;
    if code != 200 {
        let msg = v["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the node's API refused ({code}): {msg}");
    }
    Ok(v)
}

/// The body of a chunked answer, joined; any other body as it is.
fn dechunk(head: &str, body: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || size > rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
    out
}

use ledgermesh_node::events::human::{bytes, short};

/// A route as one phrase: `direct tcp`, `relayed via 12D3KooW…abcdef (quic)`.
pub fn route(path: &Value, transport: &Value, via: &Value) -> String {
    match (path.as_str(), via.as_str()) {
        (Some("relayed"), Some(v)) => format!(
            "relayed via {} ({})",
            short(v),
            transport.as_str().unwrap_or("?")
        ),
        (Some(p), _) => format!("{p} {}", transport.as_str().unwrap_or("?")),
        _ => "-".into(),
    }
}

/// `ledgermesh status`.
pub async fn status(api: &str, token: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let status = get_json(api, token, "/api/v1/status").await?;
    let peers = get_json(api, token, "/api/v1/peers").await?;
    if json {
        ledgermesh_node::events::print_json_line(&serde_json::json!({
            "peer_id": status["peer_id"],
            "role": status["role"],
            "uptime_s": status["uptime_s"],
            "public": status["public"],
            "relays": status["relays"],
            "peers": peers["peers"],
        }));
        return Ok(0);
    }
    let public = match status["public"].as_object() {
        Some(p) => format!(
            "public {} ({}){}",
            p.get("addr")
                .and_then(|a| a.as_str())
                .or(p.get("ip").and_then(|a| a.as_str()))
                .unwrap_or("-"),
            p.get("mapping").and_then(|m| m.as_str()).unwrap_or("?"),
            p.get("quic_addr")
                .and_then(|a| a.as_str())
                .map_or(String::new(), |q| format!(", QUIC {q}"))
        ),
        None => "public address: no verdict".into(),
    };
    println!(
        "{}  {}  up {}s  {}",
        status["peer_id"].as_str().unwrap_or("?"),
        status["role"].as_str().unwrap_or("?"),
        status["uptime_s"],
        public
    );
    for r in status["relays"].as_array().into_iter().flatten() {
        println!(
            "relay {}  {}",
            short(r["peer_id"].as_str().unwrap_or("?")),
            if r["reserved"] == true {
                "reserved"
            } else if r["connected"] == true {
                "connected, no reservation"
            } else {
                "not connected"
            }
        );
    }
    let list = peers["peers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no peers connected");
        return Ok(0);
    }
    println!(
        "{:<54} {:<34} {:>9} {:>6} {:>10} {:>10} {:>7}",
        "PEER", "PATH", "RTT", "LOSS", "IN", "OUT", "STREAMS"
    );
    for p in list {
        let rtt = p["rtt_ms"]
            .as_f64()
            .map(|r| format!("{r:.1} ms"))
            .unwrap_or_else(|| "-".into());
        let loss = p["connections"][0]["health"]["loss_pct"]
            .as_f64()
            .map(|l| format!("{l:.0}%"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<54} {:<34} {:>9} {:>6} {:>10} {:>10} {:>7}",
            p["peer_id"].as_str().unwrap_or("?"),
            route(&p["path"], &p["transport"], &p["via"]),
            rtt,
            loss,
            bytes(p["bytes_in"].as_u64().unwrap_or(0)),
            bytes(p["bytes_out"].as_u64().unwrap_or(0)),
            p["streams"].as_u64().unwrap_or(0),
        );
    }
    Ok(0)
}

/// `ledgermesh vpn status`: the tunnel of a running vpn node.
pub async fn vpn_status(api: &str, token: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let vpn = get_json(api, token, "/api/v1/vpn").await?;
    if json {
        ledgermesh_node::events::print_json_line(&vpn);
        return Ok(0);
    }
    let addresses: Vec<&str> = (vpn["addresses"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let exit = match &vpn["exit"] {
        Value::Null => String::new(),
        e if e["gateway"] == true => "  exit for its peers".into(),
        e => format!(
            "  through exit {}{}",
            short(e["peer_id"].as_str().unwrap_or("?")),
            if e["kill_switch"] == true {
                " (kill switch)"
            } else {
                ""
            }
        ),
    };
    println!(
        "{} on {} (mtu {}){exit}",
        addresses.join(", "),
        vpn["tun"].as_str().unwrap_or("?"),
        vpn["mtu"]
    );
    let peers = vpn["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("no peers allowed");
        return Ok(0);
    }
    println!(
        "{:<16} {:<40} {:<34} {:>9} {:>10} {:>10}",
        "PEER", "ADDRESS", "PATH", "RTT", "IN", "OUT"
    );
    for p in peers {
        let path = match p["connected"] == true {
            true => route(&p["path"], &p["transport"], &p["via"]),
            false => "not connected".into(),
        };
        let rtt = (p["rtt_ms"].as_f64()).map_or_else(|| "-".into(), |r| format!("{r:.1} ms"));
        println!(
            "{:<16} {:<40} {:<34} {:>9} {:>10} {:>10}",
            short(p["peer_id"].as_str().unwrap_or("?")),
            p["address"].as_str().unwrap_or("?"),
            path,
            rtt,
            bytes(p["bytes_in"].as_u64().unwrap_or(0)),
            bytes(p["bytes_out"].as_u64().unwrap_or(0)),
        );
    }
    Ok(0)
}

/// A PeerId as given: whole, or shortened as `status` prints it
/// (`12D3KooW…Spzpr`, also with `...`), matched against the node's peers;
/// a short form that matches none or several is refused, naming them.
pub async fn resolve_peer(
    api: &str,
    token: Option<&str>,
    given: &str,
) -> anyhow::Result<libp2p::PeerId> {
    if let Ok(p) = given.parse() {
        return Ok(p);
    }
    let Some((head, tail)) = given.split_once('…').or_else(|| given.split_once("...")) else {
        anyhow::bail!("{given} is not a PeerId (whole, or shortened as `status` prints it)");
    };
    // Eight characters at least beside the `…`: the head is the same for
    // every Ed25519 key, so the tail carries the difference.
    if tail.len() < 4 || head.len() + tail.len() < 12 {
        anyhow::bail!(
            "{given}: too short to tell peers apart; give more of it, or the whole PeerId"
        );
    }
    let v = get_json(api, token, "/api/v1/peers").await?;
    let known: Vec<&str> = (v["peers"].as_array().into_iter().flatten())
        .filter_map(|p| p["peer_id"].as_str())
        .collect();
    let matching: Vec<&str> = (known.iter().copied())
        .filter(|p| p.starts_with(head) && p.ends_with(tail) && p.len() > head.len() + tail.len())
        .collect();
    match matching[..] {
        [one] => Ok(one.parse()?),
        [] => anyhow::bail!(
            "{given}: no peer of this node matches it ({} known; `ledgermesh status` lists them)",
            known.len()
        ),
        _ => anyhow::bail!(
            "{given} matches {} peers ({}): give more of it, or the whole PeerId",
            matching.len(),
            matching.join(", ")
        ),
    }
}

/// `ledgermesh ping PEER`: pings through the running node, once a second.
pub async fn ping(
    api: &str,
    token: Option<&str>,
    peer: &str,
    count: u32,
    json: bool,
) -> anyhow::Result<i32> {
    let shortened = peer.parse::<libp2p::PeerId>().is_err();
    let peer = resolve_peer(api, token, peer).await?;
    // A short form names the peer it matched in full: no impostor with the
    // same ends passes for it unseen.
    let named = match shortened {
        true => peer.to_string(),
        false => short(&peer.to_string()),
    };
    let mut answered = 0;
    for i in 0..count.max(1) {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match request_json(api, token, "POST", &format!("/api/v1/ping/{peer}")).await {
            Ok(v) => {
                answered += 1;
                if json {
                    ledgermesh_node::events::print_json_line(&v);
                } else {
                    println!(
                        "pong from {} in {:.2} ms, {}{}",
                        named,
                        v["rtt_ms"].as_f64().unwrap_or(0.0),
                        route(&v["path"], &v["transport"], &v["via"]),
                        if v["path"] == "direct" {
                            ""
                        } else {
                            " (not direct)"
                        }
                    );
                }
            }
            Err(e) => {
                if json {
                    ledgermesh_node::events::print_json_line(
                        &serde_json::json!({"peer_id": peer.to_string(), "error": format!("{e:#}")}),
                    );
                } else {
                    println!("no pong: {e:#}");
                }
            }
        }
    }
    Ok(if answered > 0 { 0 } else { 1 })
}
