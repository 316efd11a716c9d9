//! The node's HTTP API (axum): `GET /api/v1/status`, `/api/v1/peers`,
//! `/api/v1/streams` (JSON) and `/metrics` (Prometheus text). On loopback
//! by default; any other address needs a bearer token, and a token, once
//! set, is required on every route.

use crate::ops::metrics::Now;
use crate::swarm::{NodeHandle, Snapshot};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use libp2p::PeerId;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;

/// Requests handled at once; more get `503` until one finishes.
const MAX_IN_FLIGHT: usize = 64;

/// Connections held open at once; further ones wait in the kernel's
/// backlog until one closes (a stranger cannot make the node hold more).
const MAX_CONNECTIONS: usize = 128;
/// A connection that sends nothing for this long is closed, so idle
/// connections cannot hold the slots (the dashboard asks every second).
const IDLE: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the API could not start.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A non-loopback address without a token.
    #[error("--api {0} is not a loopback address: anyone who can reach it could read the node's state; give --api-token TOKEN (or LEDGERMESH_API_TOKEN), or listen on 127.0.0.1")]
    NeedsToken(SocketAddr),
    /// A token too short to be a secret.
    #[error("--api-token is shorter than 16 characters: use a long random one (e.g. `openssl rand -hex 16`)")]
    WeakToken,
    /// The address could not be bound.
    #[error("--api {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Api {
    handle: NodeHandle,
    token: Option<Arc<str>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Host names taken besides IP literals and `localhost` (`--api-host`).
    hosts: Arc<[String]>,
}

/// Binds the API on `addr` and serves it until the node stops; returns
/// the bound address (port 0 picks one).
pub async fn start(
    handle: NodeHandle,
    addr: SocketAddr,
    token: Option<String>,
    hosts: Vec<String>,
) -> Result<SocketAddr, ApiError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ApiError::NeedsToken(addr));
    }
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(ApiError::WeakToken);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let api = Api {
        handle: handle.clone(),
        token: token.map(Arc::from),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    let app = router(api);
    let stop = handle.clone();
    let listener = Capped {
        inner: listener,
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        idle: IDLE,
    };
    handle.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.stopping().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP API stopped");
        }
    });
    Ok(bound)
}

/// A TCP listener that holds at most `slots` connections open: it stops
/// accepting while they are all taken, and a connection gives its slot
/// back when it closes.
struct Capped {
    inner: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    idle: std::time::Duration,
}

impl axum::serve::Listener for Capped {
    type Io = CappedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; wait like a full one.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((io, addr)) => return (CappedIo::new(io, slot, self.idle), addr),
                Err(e) => {
                    // Out of descriptors and the like: say so, and breathe.
                    tracing::debug!(error = %e, "API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding one of the listener's slots, closed (its reads
/// fail) once the client has sent nothing for `idle`.
struct CappedIo {
    io: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
    idle: std::time::Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl CappedIo {
    fn new(
        io: tokio::net::TcpStream,
        slot: tokio::sync::OwnedSemaphorePermit,
        idle: std::time::Duration,
    ) -> Self {
        CappedIo {
            io,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl tokio::io::AsyncRead for CappedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = tokio::time::Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "API client idle"),
            )),
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for CappedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/payments", get(payments))
        .route("/api/v1/vpn", get(vpn))
        .route(
            "/api/v1/ping/{peer}",
            axum::routing::post(ping).get(|| async {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "a ping sends packets: ask for it with POST",
                )
            }),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such page: see /api/v1/status, /api/v1/peers, /api/v1/streams, /api/v1/payments, /api/v1/vpn, /metrics",
            )
        })
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        .with_state(api)
}

/// The dashboard: one page embedded in the binary (no CDN, no build step)
/// that polls `/api/v1/status`. With a token, open it as `/#token=TOKEN`.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        include_str!("ops/dashboard.html"),
    )
        .into_response()
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({"error": msg}))).into_response()
}

/// Whether `host` (a `Host` header, or an `Origin`'s authority) names this
/// API as only its operator would: an IP literal, `localhost`, or a name
/// given with `--api-host`. A web page that got a name of its own to resolve
/// to this address (DNS rebinding) sends that name, and is refused.
fn host_allowed(host: &str, extra: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    // Strip the port: `[v6]:port`, `v4:port`, `name:port`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host.as_str(), |(n, _)| n)
    };
    name == "localhost"
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || extra.iter().any(|e| e == name)
}

/// Refuses a request whose `Host` or `Origin` is not this API's own.
fn foreign(api: &Api, req: &Request) -> Option<Response> {
    let headers = req.headers();
    if let Some(host) = headers.get(header::HOST) {
        let ok = host.to_str().is_ok_and(|h| host_allowed(h, &api.hosts));
        if !ok {
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not the node's API: use an IP address or localhost, or start the node with --api-host NAME",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = (origin.to_str().ok())
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|o| host_allowed(o, &api.hosts));
        if !ok {
            return Some(error(
                StatusCode::FORBIDDEN,
                "requests from another web site are refused",
            ));
        }
    }
    None
}

/// The Host and Origin check, the token check, and the bound on requests
/// in flight.
async fn guard(State(api): State<Api>, req: Request, next: Next) -> Response {
    if let Some(refused) = foreign(&api, &req) {
        return refused;
    }
    // The page itself holds no data; what it reads carries the token.
    let open = req.uri().path() == "/";
    if let Some(token) = api.token.as_ref().filter(|_| !open) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            let msg = if given.is_none() {
                "this API needs a token: send `Authorization: Bearer TOKEN` (ledgermesh status --api-token TOKEN)"
            } else {
                "wrong API token"
            };
            let mut r = error(StatusCode::UNAUTHORIZED, msg);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let Ok(_permit) = api.in_flight.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many requests in flight",
        );
    };
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn snapshot(api: &Api) -> Result<Snapshot, Response> {
    api.handle.snapshot().await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the node is stopping: {e}"),
        )
    })
}

/// Each connection, with its health and, for a relayed one, the health of
/// our own hop to its relay (so the hop behind the relay can be told
/// apart from the one in front of it).
fn connections(snap: &Snapshot) -> Vec<Value> {
    let hop_of = |relay: &PeerId| {
        snap.connections
            .iter()
            .find(|c| c.peer == *relay && c.conn.via.is_none())
            .map(|c| health(&c.conn.health))
    };
    let mut out: Vec<Value> = snap
        .connections
        .iter()
        .map(|c| {
            let relayed = c.conn.via.is_some();
            json!({
                "peer_id": c.peer.to_string(),
                "path": c.conn.path.as_str(),
                "transport": c.conn.transport.as_str(),
                "noise_cipher": c.noise_cipher.map(|n| n.name()),
                "via": c.conn.via.map(|v| v.to_string()),
                "remote_addr": c.conn.remote.to_string(),
                "health": health(&c.conn.health),
                "hop_to_relay": if relayed { c.conn.via.as_ref().and_then(hop_of) } else { None },
                "degraded": c.conn.degraded,
            })
        })
        .collect();
    out.sort_by(|a, b| a["peer_id"].as_str().cmp(&b["peer_id"].as_str()));
    out
}

fn health(h: &ledgermesh_protocol::path::Health) -> Value {
    json!({
        "rtt_ms": h.rtt_ms().map(|r| (r * 100.0).round() / 100.0),
        "loss_pct": (h.loss() * 100.0).round(),
        "rating": h.rating(),
    })
}

async fn status(State(api): State<Api>) -> Response {
    let snap = match snapshot(&api).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ops = api.handle.ops();
    let reserved: Vec<String> = snap.circuit_addrs.iter().map(|a| a.to_string()).collect();
    let relays: Vec<Value> = api
        .handle
        .relays()
        .iter()
        .map(|(peer, addr)| {
            let p = peer.to_string();
            json!({
                "peer_id": p,
                "addr": addr.to_string(),
                "reserved": reserved.iter().any(|c| c.contains(&format!("/p2p/{p}/p2p-circuit"))),
                "connected": snap.connections.iter().any(|c| c.peer == *peer),
            })
        })
        .collect();
    let public = snap.public.as_ref().map(|p| {
        json!({
            "addr": p.addr.as_ref().map(|a| a.to_string()),
            "ip": p.ip.map(|i| i.to_string()),
            "mapping": format!("{:?}", p.mapping).to_lowercase(),
            // The QUIC address decided beside a TCP verdict (observers
            // written by TCP address), which hard-NAT attempts offer.
            "quic_addr": p.quic.as_ref().map(|a| a.to_string()),
        })
    });
    Json(json!({
        "peer_id": api.handle.peer_id().to_string(),
        "role": ops.role(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ops.uptime_s(),
        "public": public,
        "listen_addrs": snap.direct_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "circuit_addrs": reserved,
        "relays": relays,
        "connections": connections(&snap),
        "streams": {"active": ops.traffic.active(), "recent": ops.traffic.recent()},
        "grants": ops.grants_json(),
        "relay": ops.relay_json(),
        "payments": ops.payments_json(),
    }))
    .into_response()
}

async fn peers(State(api): State<Api>) -> Response {
    let snap = match snapshot(&api).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let traffic = api.handle.ops().traffic.by_peer();
    // Throughput per peer and direction: the streams' rates, summed.
    let mut rates: std::collections::HashMap<(String, crate::ops::Dir), f64> = Default::default();
    for st in api.handle.ops().traffic.active() {
        *rates.entry((st.peer_id.clone(), st.direction)).or_default() += st.rate_bytes_s;
    }
    let conns = connections(&snap);
    let mut by_peer: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in conns {
        by_peer
            .entry(c["peer_id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(c);
    }
    let out: Vec<Value> = by_peer
        .into_iter()
        .map(|(peer, conns)| {
            // The path the traffic takes: a direct connection when there is one.
            let best = conns
                .iter()
                .find(|c| c["path"] == "direct")
                .or_else(|| conns.first())
                .cloned()
                .unwrap_or(Value::Null);
            let (bytes_in, bytes_out, streams) = peer
                .parse::<PeerId>()
                .ok()
                .and_then(|p| traffic.get(&p).copied())
                .unwrap_or_default();
            json!({
                "peer_id": peer,
                "path": best["path"],
                "transport": best["transport"],
                "noise_cipher": best["noise_cipher"],
                "via": best["via"],
                "rtt_ms": best["health"]["rtt_ms"],
                "rating": best["health"]["rating"],
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "rate_in_bytes_s": rates.get(&(peer.clone(), crate::ops::Dir::In)).copied().unwrap_or(0.0),
                "rate_out_bytes_s": rates.get(&(peer.clone(), crate::ops::Dir::Out)).copied().unwrap_or(0.0),
                "streams": streams,
                "connections": conns,
            })
        })
        .collect();
    Json(json!({ "peers": out })).into_response()
}

/// Reconciliation: per channel we are paid on (the payee's book, with its
/// claims) and per payee we pay (our meter and vouchers), with the totals.
async fn payments(State(api): State<Api>) -> Response {
    let ops = api.handle.ops();
    Json(json!({
        "as_payee": ops.payee_report(),
        "as_payer": api.handle.payer_report().await,
        "totals": ops.payments_json(),
    }))
    .into_response()
}

/// The tunnel (`vpn` role): its peers with the path each takes now.
async fn vpn(State(api): State<Api>) -> Response {
    let Some(mut view) = api.handle.ops().vpn_report() else {
        return error(
            StatusCode::NOT_FOUND,
            "this node carries no tunnel (not a vpn node)",
        );
    };
    let snap = match snapshot(&api).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let conns = connections(&snap);
    for peer in view["peers"].as_array_mut().into_iter().flatten() {
        let id = peer["peer_id"].clone();
        let of_peer: Vec<&Value> = conns.iter().filter(|c| c["peer_id"] == id).collect();
        let best = (of_peer.iter().find(|c| c["path"] == "direct"))
            .or(of_peer.first())
            .copied()
            .cloned()
            .unwrap_or(Value::Null);
        peer["connected"] = json!(!of_peer.is_empty());
        peer["path"] = best["path"].clone();
        peer["transport"] = best["transport"].clone();
        peer["via"] = best["via"].clone();
        peer["rtt_ms"] = best["health"]["rtt_ms"].clone();
    }
    Json(view).into_response()
}

async fn streams(State(api): State<Api>) -> Response {
    let ops = api.handle.ops();
    Json(json!({"active": ops.traffic.active(), "recent": ops.traffic.recent()})).into_response()
}

async fn metrics(State(api): State<Api>) -> Response {
    let snap = match snapshot(&api).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ops = api.handle.ops();
    let mut now = Now::default();
    for c in &snap.connections {
        *now.connections
            .entry((
                c.conn.path.as_str().to_string(),
                c.conn.transport.as_str().to_string(),
            ))
            .or_default() += 1;
    }
    now.reservations_held = snap.circuit_addrs.len() as i64;
    now.streams_active = ops.traffic.active().iter().map(|s| s.direction).collect();
    now.stream_totals = ops.traffic.totals();
    now.hop_dropped = ops.hop_dropped();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.encode(&now),
    )
        .into_response()
}

/// The ping protocol every libp2p node answers (the ping behaviour).
const PING: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/ipfs/ping/1.0.0");

/// One ping through the node: 32 random bytes echoed back over a stream
/// on the connection the node uses for the peer, and the route it took.
async fn ping(
    State(api): State<Api>,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Response {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let Ok(peer) = peer.parse::<PeerId>() else {
        return error(StatusCode::BAD_REQUEST, &format!("{peer} is not a PeerId"));
    };
    let mut control = api.handle.stream_control();
    let payload: [u8; 32] = rand::random();
    let started = std::time::Instant::now();
    let round = async {
        let mut s = control
            .open_stream(peer, PING)
            .await
            .map_err(|e| format!("cannot open a stream to {peer}: {e}"))?;
        s.write_all(&payload).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut back = [0u8; 32];
        s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        let rtt = started.elapsed();
        let _ = s.close().await;
        if back != payload {
            return Err("the pong did not match the ping".to_string());
        }
        Ok(rtt)
    };
    let rtt = match tokio::time::timeout(std::time::Duration::from_secs(10), round).await {
        Ok(Ok(rtt)) => rtt,
        Ok(Err(e)) => return error(StatusCode::BAD_GATEWAY, &e),
        Err(_) => return error(StatusCode::GATEWAY_TIMEOUT, "no pong within 10 s"),
    };
    let snap = match snapshot(&api).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The route the node's traffic to the peer takes: direct when it has one.
    let conns: Vec<_> = snap.connections.iter().filter(|c| c.peer == peer).collect();
    let best = conns
        .iter()
        .find(|c| c.conn.via.is_none())
        .or(conns.first());
    Json(json!({
        "peer_id": peer.to_string(),
        "rtt_ms": (rtt.as_secs_f64() * 1e5).round() / 100.0,
        "path": best.map(|c| c.conn.path.as_str()),
        "transport": best.map(|c| c.conn.transport.as_str()),
        "via": best.and_then(|c| c.conn.via.map(|v| v.to_string())),
        "direct": best.is_some_and(|c| c.conn.via.is_none()),
    }))
    .into_response()
}

#[cfg(test)]
mod host_tests {
    use super::host_allowed;

    #[test]
    fn only_ip_literals_localhost_and_named_hosts_are_this_api() {
        let extra = vec!["node.lan".to_string()];
        for ok in [
            "127.0.0.1:7001",
            "127.0.0.1",
            "[::1]:7001",
            "LOCALHOST:7001",
            "192.0.2.7:80",
            "node.lan:7001",
        ] {
            assert!(host_allowed(ok, &extra), "{ok}");
        }
        for bad in [
            "evil.example:7001",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:7001",
            "[::1",
            "",
        ] {
            assert!(!host_allowed(bad, &extra), "{bad}");
        }
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_client_loses_its_slot_and_a_talking_one_keeps_it() {
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let idle = std::time::Duration::from_millis(300);
        let mut listener = Capped {
            inner,
            slots: slots.clone(),
            idle,
        };
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut silent_io, _) = listener.accept().await;
        let mut talker = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut talking_io, _) = listener.accept().await;
        assert_eq!(slots.available_permits(), 0);
        // The talker sends a byte every 100 ms for a second: never idle.
        let talk = tokio::spawn(async move {
            for _ in 0..10 {
                talker.write_all(b"x").await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            talker
        });
        let mut got = 0;
        let mut buf = [0u8; 1];
        while got < 10 {
            got += talking_io
                .read(&mut buf)
                .await
                .expect("a talking client is kept");
        }
        let _talker = talk.await.unwrap();
        // The silent one was cut after its idle time and gave its slot back.
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), silent_io.read(&mut buf));
        let err = read.await.expect("cut, not left hanging").expect_err("cut");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(silent_io);
        assert_eq!(slots.available_permits(), 1);
    }
}
