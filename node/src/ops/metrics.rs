//! `/metrics`: the node's figures in the Prometheus text format
//! (prometheus-client). Counters are fed from the node's events as they
//! are emitted; gauges of what exists now (connections, reservations,
//! streams) are read from the node when scraped.

use super::traffic::Dir;
use crate::events::{CircuitOutcome, Event, ReservationOutcome};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Channels whose last cumulative voucher is remembered (to count what
/// each new voucher adds); past it, a new channel's first voucher counts
/// whole.
const MAX_CHANNELS: usize = 4096;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// libp2p's own metrics (libp2p-metrics), in the same registry under
    /// `libp2p_…`: swarm connections and dials, ping, identify, DCUtR.
    p2p: libp2p::metrics::Metrics,
    connections: Family<Labels, Gauge>,
    connections_opened: Family<Labels, Counter>,
    hole_punches: Family<Labels, Counter>,
    hard_nat: Family<Labels, Counter>,
    path_changes: Family<Labels, Counter>,
    reservations_held: Gauge,
    relay_reservations: Gauge,
    relay_reservation_events: Family<Labels, Counter>,
    relay_circuits: Family<Labels, Counter>,
    relay_circuits_active: Gauge,
    relay_circuit_bytes: Family<Labels, Counter>,
    relay_hop_dropped: Counter,
    relay_hop_dropped_seen: std::sync::atomic::AtomicU64,
    streams_active: Family<Labels, Gauge>,
    stream_bytes: Family<Labels, Counter>,
    ledger_posts: Family<Labels, Counter>,
    ledger_gas: Counter,
    ledger_messages: Counter,
    envelope_rejections: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    grants: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    channels_opened: Counter,
    vouchers: Family<Labels, Counter>,
    voucher_wei: Family<Labels, FloatCounter>,
    claims: Counter,
    claimed_wei: FloatCounter,
    payment_refusals: Family<Labels, Counter>,
    claims_failed: Family<Labels, Counter>,
    /// The mesh VPN's.
    pub vpn: super::vpn_metrics::VpnMetrics,
    /// Last cumulative amount per (direction, channel).
    cumulative: Mutex<HashMap<(bool, String), u128>>,
    /// Stream bytes already counted, per (direction, name).
    stream_seen: Mutex<BTreeMap<(Dir, String), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let p2p = libp2p::metrics::Metrics::new(&mut root);
        let registry = root.sub_registry_with_prefix("ledgermesh");
        let mut m = Self {
            registry: Registry::default(),
            p2p,
            connections: Default::default(),
            connections_opened: Default::default(),
            hole_punches: Default::default(),
            hard_nat: Default::default(),
            path_changes: Default::default(),
            reservations_held: Default::default(),
            relay_reservations: Default::default(),
            relay_reservation_events: Default::default(),
            relay_circuits: Default::default(),
            relay_circuits_active: Default::default(),
            relay_circuit_bytes: Default::default(),
            relay_hop_dropped: Default::default(),
            relay_hop_dropped_seen: Default::default(),
            streams_active: Default::default(),
            stream_bytes: Default::default(),
            ledger_posts: Default::default(),
            ledger_gas: Default::default(),
            ledger_messages: Default::default(),
            envelope_rejections: Default::default(),
            errors: Default::default(),
            grants: Default::default(),
            refusals: Default::default(),
            channels_opened: Default::default(),
            vouchers: Default::default(),
            voucher_wei: Default::default(),
            claims: Default::default(),
            claimed_wei: Default::default(),
            payment_refusals: Default::default(),
            claims_failed: Default::default(),
            vpn: Default::default(),
            cumulative: Default::default(),
            stream_seen: Default::default(),
        };
        m.register_network(registry);
        m.register_ledger_and_money(registry);
        m.vpn.register(registry);
        m.registry = root;
        m
    }

    /// Connections, paths, reservations, a relay's circuits and streams.
    fn register_network(&self, r: &mut Registry) {
        r.register(
            "connections",
            "Open connections, by path (direct, relayed) and transport",
            self.connections.clone(),
        );
        r.register(
            "connections_opened",
            "Connections established, by path and transport",
            self.connections_opened.clone(),
        );
        r.register(
            "hole_punches",
            "Hole punches (DCUtR), by outcome (upgraded, failed)",
            self.hole_punches.clone(),
        );
        r.register(
            "hard_nat_attempts",
            "Hard-NAT attempts, by role (hard, easy) and outcome (direct, failed, declined)",
            self.hard_nat.clone(),
        );
        r.register(
            "path_changes",
            "Changes of the route to a peer, by reason",
            self.path_changes.clone(),
        );
        r.register(
            "reservations_held",
            "Our reservations on relays (circuit addresses we can be reached at)",
            self.reservations_held.clone(),
        );
        r.register(
            "relay_reservations",
            "Relay role: reservations other peers hold on us now",
            self.relay_reservations.clone(),
        );
        r.register(
            "relay_reservation_events",
            "Relay role: reservations accepted, renewed, refused, closed, timed out",
            self.relay_reservation_events.clone(),
        );
        r.register(
            "relay_circuits",
            "Relay role: circuits by outcome (opened, refused, closed, ...)",
            self.relay_circuits.clone(),
        );
        r.register(
            "relay_circuits_active",
            "Relay role: circuits open now",
            self.relay_circuits_active.clone(),
        );
        r.register_with_unit(
            "relay_circuit",
            "Relay role: bytes carried by closed circuits, by direction",
            prometheus_client::registry::Unit::Bytes,
            self.relay_circuit_bytes.clone(),
        );
        r.register(
            "relay_hop_requests_dropped",
            "Relay role: hop requests dropped because the queue was full",
            self.relay_hop_dropped.clone(),
        );
        r.register(
            "streams_active",
            "Data streams running now, by direction (in, out)",
            self.streams_active.clone(),
        );
        r.register_with_unit(
            "stream",
            "Data stream bytes, by direction and stream name",
            prometheus_client::registry::Unit::Bytes,
            self.stream_bytes.clone(),
        );
    }

    /// The ledger, errors, grants and payments.
    fn register_ledger_and_money(&self, r: &mut Registry) {
        r.register(
            "ledger_posts",
            "Envelopes posted on the ledger, by kind",
            self.ledger_posts.clone(),
        );
        r.register(
            "ledger_gas",
            "Gas used by our ledger posts",
            self.ledger_gas.clone(),
        );
        r.register(
            "ledger_messages",
            "Messages read from our ledger topic",
            self.ledger_messages.clone(),
        );
        r.register(
            "envelope_rejections",
            "Ledger envelopes rejected, by reason",
            self.envelope_rejections.clone(),
        );
        r.register(
            "errors",
            "Errors reported (the node kept running), by part and reason",
            self.errors.clone(),
        );
        r.register(
            "grants",
            "Grants issued (provider) or received (consumer), by renewed",
            self.grants.clone(),
        );
        r.register(
            "access_refusals",
            "Streams refused to a peer, by reason",
            self.refusals.clone(),
        );
        r.register(
            "payment_channels_opened",
            "Payment channels we opened as payer",
            self.channels_opened.clone(),
        );
        r.register(
            "vouchers",
            "Vouchers, by direction (sent, received)",
            self.vouchers.clone(),
        );
        r.register(
            "voucher_wei",
            "What vouchers added, in wei, by direction (sent, received)",
            self.voucher_wei.clone(),
        );
        r.register(
            "claims",
            "On-chain claims of vouchers we made as payee",
            self.claims.clone(),
        );
        r.register(
            "claimed_wei",
            "Wei claimed on chain as payee",
            self.claimed_wei.clone(),
        );
        r.register(
            "payment_refusals",
            "Payments refused (an invoice over our meter, a bad voucher...), by reason",
            self.payment_refusals.clone(),
        );
        r.register(
            "claims_failed",
            "Claims that brought nothing, by reason (nothing_to_claim, no_such_channel, reverted, rpc)",
            self.claims_failed.clone(),
        );
    }

    /// Records a swarm event in libp2p's metrics.
    pub fn record_swarm<T>(&self, event: &libp2p::swarm::SwarmEvent<T>) {
        use libp2p::metrics::Recorder;
        self.p2p.record(event);
    }

    /// Records a behaviour's event that libp2p's metrics know (ping,
    /// identify, DCUtR).
    pub fn record_p2p<E>(&self, event: &E)
    where
        libp2p::metrics::Metrics: libp2p::metrics::Recorder<E>,
    {
        use libp2p::metrics::Recorder;
        self.p2p.record(event)
    }

    /// Counts what an event says.
    pub fn observe(&self, event: &Event) {
        self.observe_paths(event);
        self.observe_relay(event);
        self.observe_ledger_and_access(event);
        self.observe_money(event);
        self.vpn.observe(event);
    }

    /// Connections, hole punches and path changes.
    fn observe_paths(&self, event: &Event) {
        match event {
            Event::Connected {
                path, transport, ..
            } => {
                let labels = l(&[("path", path.as_str()), ("transport", transport.as_str())]);
                self.connections_opened.get_or_create(&labels).inc();
            }
            Event::Upgraded { .. } => {
                self.hole_punches
                    .get_or_create(&l(&[("outcome", "upgraded")]))
                    .inc();
            }
            Event::HolePunchFailed { .. } => {
                self.hole_punches
                    .get_or_create(&l(&[("outcome", "failed")]))
                    .inc();
            }
            Event::HardNat { role, outcome, .. } => {
                self.hard_nat
                    .get_or_create(&l(&[("role", role), ("outcome", outcome.as_str())]))
                    .inc();
            }
            Event::PathChanged { reason, .. } => {
                let reason = serde_json::to_value(reason).unwrap_or_default();
                let reason = reason.as_str().unwrap_or("other");
                self.path_changes
                    .get_or_create(&l(&[("reason", reason)]))
                    .inc();
            }
            _ => {}
        }
    }

    /// A relay's reservations and circuits.
    fn observe_relay(&self, event: &Event) {
        match event {
            Event::RelayReservation { outcome, .. } => {
                self.relay_reservation_events
                    .get_or_create(&l(&[("outcome", outcome.as_str())]))
                    .inc();
                match outcome {
                    ReservationOutcome::Accepted => {
                        self.relay_reservations.inc();
                    }
                    ReservationOutcome::Closed | ReservationOutcome::TimedOut => {
                        self.relay_reservations.dec();
                    }
                    ReservationOutcome::Renewed | ReservationOutcome::Refused => {}
                }
            }
            Event::RelayCircuit {
                outcome,
                bytes_to_dst,
                bytes_to_src,
                ..
            } => {
                self.relay_circuits
                    .get_or_create(&l(&[("outcome", outcome.as_str())]))
                    .inc();
                match outcome {
                    CircuitOutcome::Opened => self.relay_circuits_active.inc(),
                    CircuitOutcome::Refused => 0,
                    CircuitOutcome::Closed => self.relay_circuits_active.dec(),
                };
                for (dir, b) in [("to_dst", bytes_to_dst), ("to_src", bytes_to_src)] {
                    if let Some(b) = b {
                        self.relay_circuit_bytes
                            .get_or_create(&l(&[("direction", dir)]))
                            .inc_by(*b);
                    }
                }
            }
            _ => {}
        }
    }

    /// Ledger posts and messages, errors, grants and refusals.
    fn observe_ledger_and_access(&self, event: &Event) {
        match event {
            Event::LedgerPost { kind, gas_used, .. } => {
                self.ledger_posts
                    .get_or_create(&l(&[("kind", bounded(kind))]))
                    .inc();
                if let Some(g) = gas_used {
                    self.ledger_gas.inc_by(*g);
                }
            }
            Event::LedgerMessage { .. } => {
                self.ledger_messages.inc();
            }
            Event::Error { what, reason, .. } => {
                let reason = reason.as_deref().unwrap_or("none");
                if *what == crate::events::ErrorPart::Envelope {
                    self.envelope_rejections
                        .get_or_create(&l(&[("reason", bounded(reason))]))
                        .inc();
                }
                self.errors
                    .get_or_create(&l(&[("what", what.as_str()), ("reason", bounded(reason))]))
                    .inc();
            }
            Event::Grant { renewed, .. } => {
                self.grants
                    .get_or_create(&l(&[("renewed", if *renewed { "true" } else { "false" })]))
                    .inc();
            }
            Event::AccessRefused { reason, .. } => {
                self.refusals
                    .get_or_create(&l(&[("reason", bounded(reason))]))
                    .inc();
            }
            _ => {}
        }
    }

    /// Channels, vouchers, claims and payment refusals.
    fn observe_money(&self, event: &Event) {
        match event {
            Event::ChannelOpened { .. } => {
                self.channels_opened.inc();
            }
            Event::VoucherSent {
                channel,
                cumulative,
                ..
            } => self.voucher(false, channel, cumulative),
            Event::VoucherReceived {
                channel,
                cumulative,
                ..
            } => self.voucher(true, channel, cumulative),
            Event::Claimed { amount, .. } => {
                self.claims.inc();
                self.claimed_wei
                    .inc_by(amount.parse::<u128>().unwrap_or(0) as f64);
            }
            Event::PaymentRefused { reason, .. } => {
                self.payment_refusals
                    .get_or_create(&l(&[("reason", bounded(reason))]))
                    .inc();
            }
            Event::ClaimFailed { reason, .. } => {
                self.claims_failed
                    .get_or_create(&l(&[("reason", bounded(reason))]))
                    .inc();
            }
            _ => {}
        }
    }

    fn voucher(&self, received: bool, channel: &str, cumulative: &str) {
        let dir = if received { "received" } else { "sent" };
        self.vouchers.get_or_create(&l(&[("direction", dir)])).inc();
        let now: u128 = cumulative.parse().unwrap_or(0);
        let mut last = self.cumulative.lock().unwrap_or_else(|p| p.into_inner());
        let key = (received, channel.to_string());
        let before = last.get(&key).copied().unwrap_or(0);
        if last.len() < MAX_CHANNELS || last.contains_key(&key) {
            last.insert(key, now.max(before));
        }
        let added = now.saturating_sub(before);
        self.voucher_wei
            .get_or_create(&l(&[("direction", dir)]))
            .inc_by(added as f64);
    }

    /// The text exposition, with the gauges of `now` filled in.
    pub fn encode(&self, now: &Now) -> String {
        self.connections.clear();
        for ((path, transport), n) in &now.connections {
            self.connections
                .get_or_create(&l(&[("path", path), ("transport", transport)]))
                .set(*n);
        }
        self.reservations_held.set(now.reservations_held);
        if let Some(d) = now.hop_dropped {
            use std::sync::atomic::Ordering;
            let before = self.relay_hop_dropped_seen.swap(d, Ordering::Relaxed);
            self.relay_hop_dropped.inc_by(d.saturating_sub(before));
        }
        self.streams_active.clear();
        for dir in [Dir::In, Dir::Out] {
            let n = now.streams_active.iter().filter(|d| **d == dir).count();
            self.streams_active
                .get_or_create(&l(&[("direction", dir.as_str())]))
                .set(n as i64);
        }
        {
            let mut seen = self.stream_seen.lock().unwrap_or_else(|p| p.into_inner());
            for ((dir, name), total) in &now.stream_totals {
                let before = seen.entry((*dir, name.clone())).or_default();
                if *total > *before {
                    self.stream_bytes
                        .get_or_create(&l(&[("direction", dir.as_str()), ("stream", name)]))
                        .inc_by(*total - *before);
                    *before = *total;
                }
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What exists at a scrape.
#[derive(Debug, Default)]
pub struct Now {
    /// Open connections by (path, transport).
    pub connections: BTreeMap<(String, String), i64>,
    /// Our reservations on relays.
    pub reservations_held: i64,
    /// The direction of each stream running.
    pub streams_active: Vec<Dir>,
    /// Stream byte totals.
    pub stream_totals: BTreeMap<(Dir, String), u64>,
    /// A relay's hop requests dropped so far.
    pub hop_dropped: Option<u64>,
}

/// Label values come from our own vocabulary; anything long is cut so a
/// value can never carry a stranger's text into the label set unbounded.
fn bounded(s: &str) -> &str {
    if s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_prometheus_counters_with_conventional_names() {
        let m = Metrics::new();
        m.observe(&Event::Upgraded {
            peer_id: "p".into(),
            transport: ledgermesh_protocol::path::TransportKind::Tcp,
            ms_after_relayed: 3,
        });
        for c in ["10", "25"] {
            m.observe(&Event::VoucherReceived {
                payer: "a".into(),
                channel: "0x01".into(),
                cumulative: c.into(),
                bytes: 1,
            });
        }
        m.observe(&Event::Error {
            what: crate::events::ErrorPart::Envelope,
            detail: "x".into(),
            reason: Some("replay"),
            peer_id: None,
        });
        m.observe(&Event::HardNat {
            peer_id: "p".into(),
            role: "hard",
            outcome: crate::events::HardNatOutcome::Direct,
            reason: None,
            sockets: 256,
            probes: 2048,
            chance: 0.9997,
            ms: 120,
            remote_addr: None,
        });
        m.observe(&Event::ClaimFailed {
            channel: "0x01".into(),
            reason: "rpc".into(),
            detail: "x".into(),
        });
        let mut now = Now::default();
        now.connections.insert(("direct".into(), "tcp".into()), 2);
        now.stream_totals.insert((Dir::Out, "feed".into()), 4096);
        let text = m.encode(&now);
        for want in [
            "ledgermesh_hole_punches_total{outcome=\"upgraded\"} 1",
            "ledgermesh_hard_nat_attempts_total{role=\"hard\",outcome=\"direct\"} 1",
            "ledgermesh_voucher_wei_total{direction=\"received\"} 25.0",
            "ledgermesh_vouchers_total{direction=\"received\"} 2",
            "ledgermesh_envelope_rejections_total{reason=\"replay\"} 1",
            "ledgermesh_claims_failed_total{reason=\"rpc\"} 1",
            "ledgermesh_connections{path=\"direct\",transport=\"tcp\"} 2",
            "ledgermesh_stream_bytes_total{direction=\"out\",stream=\"feed\"} 4096",
        ] {
            assert!(text.contains(want), "missing {want} in:\n{text}");
        }
        // A scrape later counts only what was added.
        now.stream_totals.insert((Dir::Out, "feed".into()), 5000);
        assert!(m
            .encode(&now)
            .contains("ledgermesh_stream_bytes_total{direction=\"out\",stream=\"feed\"} 5000"));
    }
}
