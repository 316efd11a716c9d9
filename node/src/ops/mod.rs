//! The operator's view of a node: what it is doing now (connections and
//! their health, reservations, streams with bytes and rates, a relay's
//! circuits and earnings), served as JSON (`/api/v1/…`) and as Prometheus
//! metrics (`/metrics`) by [`api`].
//!
//! Everything here is fed two ways: the events the node emits pass through
//! [`Ops::observe`] (counters and the relay's tables), and the node is
//! asked for a snapshot when a page is read (connections, addresses).

pub mod metered;
pub mod metrics;
pub mod traffic;
pub mod vpn_metrics;

use crate::events::{CircuitOutcome, Event, ReservationOutcome};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;
pub use traffic::{Counted, Dir, Tracked, Traffic};

/// Reservations and circuits remembered for the status page (a relay's
/// own caps are lower: these only bound the tables if those change).
const MAX_TRACKED: usize = 8192;

/// What a relay is carrying, from its events.
#[derive(Debug, Default)]
struct RelayTables {
    /// Peers holding a reservation on us, since (unix ms).
    reservations: HashMap<String, u64>,
    /// Open circuits: (src, dst) → since (unix ms).
    circuits: HashMap<(String, String), u64>,
    circuits_closed: u64,
    bytes_carried: u64,
}

/// Payment figures, from the events.
#[derive(Debug, Default)]
struct Money {
    /// Latest cumulative voucher per (payer, channel) we received.
    received: HashMap<(String, String), u128>,
    /// Latest cumulative voucher per (payee, channel) we sent.
    sent: HashMap<(String, String), u128>,
    claimed: u128,
    /// Each channel's claims (amount, tx, gas), the latest few.
    claims: HashMap<String, VecDeque<Value>>,
}

/// Claims kept per channel for the payments report.
const CLAIMS_PER_CHANNEL: usize = 8;

/// Grants remembered for the status (the grant store's own cap).
const MAX_GRANTS: usize = 65_536;

/// One node's operator view; the node's emitter feeds it.
pub struct Ops {
    started: Instant,
    role: String,
    /// Streams in and out.
    pub traffic: Traffic,
    /// The Prometheus registry.
    pub metrics: metrics::Metrics,
    relay: Mutex<RelayTables>,
    money: Mutex<Money>,
    /// Grants in force: (peer, stream) → until (unix ms). On a provider
    /// the grants it issued, on a consumer the ones it holds.
    grants: Mutex<HashMap<(String, String), u64>>,
    /// A relay's hop requests dropped because its queue was full.
    hop_dropped: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The payee's accounts, when the node charges (relay, provider).
    payees: std::sync::OnceLock<PayeeBook>,
    /// The tunnel's view, when the node carries one (`vpn`).
    vpn: std::sync::OnceLock<VpnView>,
}

/// Reads the tunnel: its addresses, device, exit and peers as they stand.
pub type VpnView = std::sync::Arc<dyn Fn() -> Value + Send + Sync>;

/// Reads the payee's book: its accounts as they stand now.
pub type PayeeBook = std::sync::Arc<
    dyn Fn() -> Vec<ledgermesh_protocol::payment::book::AccountReport> + Send + Sync,
>;

impl crate::events::Tap for Ops {
    fn observe(&self, event: &Event) {
        Ops::observe(self, event)
    }
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").field("role", &self.role).finish()
    }
}

impl Ops {
    /// A fresh view for a node in `role`.
    pub fn new(role: &str) -> Self {
        Self {
            started: Instant::now(),
            role: role.to_string(),
            traffic: Traffic::default(),
            metrics: metrics::Metrics::new(),
            relay: Default::default(),
            money: Default::default(),
            grants: Default::default(),
            hop_dropped: Default::default(),
            payees: Default::default(),
            vpn: Default::default(),
        }
    }

    /// The tunnel's view the API reads.
    pub fn report_vpn(&self, view: VpnView) {
        let _ = self.vpn.set(view);
    }

    /// The tunnel as it stands, when the node carries one.
    pub fn vpn_report(&self) -> Option<Value> {
        self.vpn.get().map(|v| v())
    }

    /// The payee accounts the payments report reads.
    pub fn report_payees(&self, payees: PayeeBook) {
        let _ = self.payees.set(payees);
    }

    /// Each channel we are paid on, as the payee's book has it, with its
    /// latest claims: bytes served, owed, the highest voucher, claimed,
    /// unclaimed (held, not yet claimed), unpaid (served, no voucher yet:
    /// what is at risk now); wei as decimal strings.
    pub fn payee_report(&self) -> Vec<Value> {
        let Some(p) = self.payees.get() else {
            return vec![];
        };
        let m = self.money.lock().unwrap_or_else(|p| p.into_inner());
        (p().into_iter())
            .map(|r| {
                let channel = format!("0x{}", hex::encode(r.channel));
                let claims: Vec<Value> = m
                    .claims
                    .get(&channel)
                    .map_or(vec![], |c| c.iter().cloned().collect());
                json!({
                    "channel": channel,
                    "payer_account": format!("0x{}", hex::encode(r.payer)),
                    "peers": r.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "bytes": r.bytes,
                    "owed_wei": r.owed.to_string(),
                    "highest_voucher_wei": r.paid.to_string(),
                    "claimed_wei": r.claimed.to_string(),
                    "unclaimed_wei": r.paid.saturating_sub(r.claimed).to_string(),
                    "unpaid_wei": r.owed.saturating_sub(r.paid).to_string(),
                    "window_wei": r.window.to_string(),
                    "deposit_wei": r.deposit.to_string(),
                    "state": r.state,
                    "claims": claims,
                })
            })
            .collect()
    }

    /// Takes in one event the node emitted.
    pub fn observe(&self, event: &Event) {
        self.metrics.observe(event);
        self.observe_relay(event);
        self.observe_money(event);
        self.observe_grants(event);
    }

    /// A relay's reservations and circuits.
    fn observe_relay(&self, event: &Event) {
        match event {
            Event::RelayReservation {
                peer_id, outcome, ..
            } => {
                let mut r = self.relay.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    ReservationOutcome::Accepted | ReservationOutcome::Renewed => {
                        if r.reservations.len() < MAX_TRACKED
                            || r.reservations.contains_key(peer_id)
                        {
                            r.reservations
                                .entry(peer_id.clone())
                                .or_insert_with(crate::clock::now_ms);
                        }
                    }
                    ReservationOutcome::Refused => {}
                    ReservationOutcome::Closed | ReservationOutcome::TimedOut => {
                        r.reservations.remove(peer_id);
                    }
                }
            }
            Event::RelayCircuit {
                src,
                dst,
                outcome,
                bytes_to_dst,
                bytes_to_src,
                ..
            } => {
                let mut r = self.relay.lock().unwrap_or_else(|p| p.into_inner());
                let key = (src.clone(), dst.clone());
                match outcome {
                    CircuitOutcome::Opened => {
                        if r.circuits.len() < MAX_TRACKED {
                            r.circuits.insert(key, crate::clock::now_ms());
                        }
                    }
                    CircuitOutcome::Refused => {}
                    CircuitOutcome::Closed => {
                        r.circuits.remove(&key);
                        r.circuits_closed += 1;
                        r.bytes_carried += bytes_to_dst.unwrap_or(0) + bytes_to_src.unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }

    /// Vouchers sent and received, and claims.
    fn observe_money(&self, event: &Event) {
        match event {
            Event::VoucherReceived {
                payer,
                channel,
                cumulative,
                ..
            } => {
                let mut m = self.money.lock().unwrap_or_else(|p| p.into_inner());
                let key = (payer.clone(), channel.clone());
                if m.received.len() < MAX_TRACKED || m.received.contains_key(&key) {
                    let v = m.received.entry(key).or_default();
                    *v = (*v).max(cumulative.parse().unwrap_or(0));
                }
            }
            Event::VoucherSent {
                payee,
                channel,
                cumulative,
            } => {
                let mut m = self.money.lock().unwrap_or_else(|p| p.into_inner());
                let key = (payee.clone(), channel.clone());
                if m.sent.len() < MAX_TRACKED || m.sent.contains_key(&key) {
                    let v = m.sent.entry(key).or_default();
                    *v = (*v).max(cumulative.parse().unwrap_or(0));
                }
            }
            Event::Claimed {
                channel,
                amount,
                tx,
                gas_used,
            } => {
                let mut m = self.money.lock().unwrap_or_else(|p| p.into_inner());
                m.claimed += amount.parse::<u128>().unwrap_or(0);
                if m.claims.len() < MAX_TRACKED || m.claims.contains_key(channel) {
                    let c = m.claims.entry(channel.clone()).or_default();
                    if c.len() >= CLAIMS_PER_CHANNEL {
                        c.pop_front();
                    }
                    c.push_back(json!({"amount_wei": amount, "tx": tx, "gas_used": gas_used}));
                }
            }
            _ => {}
        }
    }

    /// Grants held by buyers.
    fn observe_grants(&self, event: &Event) {
        match event {
            Event::Grant {
                peer_id,
                stream,
                expires_ms,
                ..
            } => {
                let mut g = self.grants.lock().unwrap_or_else(|p| p.into_inner());
                let now = crate::clock::now_ms();
                if g.len() >= MAX_GRANTS {
                    g.retain(|_, until| *until > now);
                }
                let key = (peer_id.clone(), stream.clone());
                if g.len() < MAX_GRANTS || g.contains_key(&key) {
                    g.insert(key, *expires_ms);
                }
            }
            Event::GrantExpired {
                peer_id, stream, ..
            } => {
                let mut g = self.grants.lock().unwrap_or_else(|p| p.into_inner());
                g.remove(&(peer_id.clone(), stream.clone()));
            }
            _ => {}
        }
    }

    /// Where the relay counts hop requests dropped for a full queue.
    pub fn count_hop_drops_in(&self, dropped: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let _ = self.hop_dropped.set(dropped);
    }

    /// Hop requests dropped so far (a relay's queue full), when a relay.
    pub fn hop_dropped(&self) -> Option<u64> {
        (self.hop_dropped.get()).map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The role this node runs.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Seconds since the node started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The relay section of the status (circuits, reservations, bytes,
    /// earnings as vouchers received and claims).
    pub fn relay_json(&self) -> Value {
        let r = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        let mut reservations: Vec<Value> = r
            .reservations
            .iter()
            .map(|(peer, since)| json!({"peer_id": peer, "since_ms": since}))
            .collect();
        reservations.sort_by_key(|v| v["since_ms"].as_u64());
        let mut circuits: Vec<Value> = r
            .circuits
            .iter()
            .map(|((src, dst), since)| json!({"src": src, "dst": dst, "since_ms": since}))
            .collect();
        circuits.sort_by_key(|v| v["since_ms"].as_u64());
        json!({
            "reservations": reservations,
            "circuits": circuits,
            "circuits_closed": r.circuits_closed,
            "bytes_carried": r.bytes_carried,
            "hop_requests_dropped": self.hop_dropped(),
        })
    }

    /// Payment figures: vouchers received (earned) and sent (paid), and
    /// claims, in wei as decimal strings.
    pub fn payments_json(&self) -> Value {
        let m = self.money.lock().unwrap_or_else(|p| p.into_inner());
        // Vouchers are cumulative per channel, and several peers may pay
        // through one channel: the highest of each channel, summed.
        let mut per_channel: HashMap<&str, u128> = HashMap::new();
        for ((_, ch), v) in &m.received {
            let e = per_channel.entry(ch.as_str()).or_default();
            *e = (*e).max(*v);
        }
        let earned: u128 = per_channel.values().sum();
        let paid: u128 = m.sent.values().sum();
        let channels = |map: &HashMap<(String, String), u128>, who: &str| -> Vec<Value> {
            let mut v: Vec<Value> = map
                .iter()
                .map(|((peer, ch), amount)| json!({who: peer, "channel": ch, "cumulative_wei": amount.to_string()}))
                .collect();
            v.sort_by(|a, b| a["channel"].as_str().cmp(&b["channel"].as_str()));
            v
        };
        json!({
            "earned_wei": earned.to_string(),
            "claimed_wei": m.claimed.to_string(),
            "paid_wei": paid.to_string(),
            "from_payers": channels(&m.received, "payer"),
            "to_payees": channels(&m.sent, "payee"),
        })
    }

    /// The grants in force, soonest to end first.
    pub fn grants_json(&self) -> Value {
        let now = crate::clock::now_ms();
        let mut g = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|_, until| *until > now);
        let mut v: Vec<Value> = g
            .iter()
            .map(|((peer, stream), until)| json!({"peer_id": peer, "stream": stream, "expires_ms": until}))
            .collect();
        v.sort_by_key(|x| x["expires_ms"].as_u64());
        Value::Array(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fill_the_relay_tables_the_payments_and_the_grants() {
        let ops = Ops::new("relay");
        let ev = |e: Event| ops.observe(&e);
        ev(Event::RelayReservation {
            peer_id: "P".into(),
            outcome: ReservationOutcome::Accepted,
            reason: None,
            status: None,
        });
        ev(Event::RelayCircuit {
            src: "C".into(),
            dst: "P".into(),
            outcome: CircuitOutcome::Opened,
            reason: None,
            status: None,
            bytes_to_dst: None,
            bytes_to_src: None,
        });
        let r = ops.relay_json();
        assert_eq!(r["reservations"][0]["peer_id"], "P");
        assert_eq!(r["circuits"][0]["src"], "C");
        ev(Event::RelayCircuit {
            src: "C".into(),
            dst: "P".into(),
            outcome: CircuitOutcome::Closed,
            reason: None,
            status: None,
            bytes_to_dst: Some(100),
            bytes_to_src: Some(20),
        });
        ev(Event::RelayReservation {
            peer_id: "P".into(),
            outcome: ReservationOutcome::TimedOut,
            reason: None,
            status: None,
        });
        let r = ops.relay_json();
        assert_eq!(r["circuits"], json!([]));
        assert_eq!(r["reservations"], json!([]));
        assert_eq!(
            (r["circuits_closed"].clone(), r["bytes_carried"].clone()),
            (json!(1), json!(120))
        );
        // Cumulative vouchers: the latest per channel counts, not their sum.
        for c in ["100", "250"] {
            ev(Event::VoucherReceived {
                payer: "C".into(),
                channel: "0x01".into(),
                cumulative: c.into(),
                bytes: 0,
            });
        }
        ev(Event::Claimed {
            channel: "0x01".into(),
            amount: "250".into(),
            tx: None,
            gas_used: None,
        });
        let p = ops.payments_json();
        assert_eq!(
            (p["earned_wei"].as_str(), p["claimed_wei"].as_str()),
            (Some("250"), Some("250"))
        );
        let now = crate::clock::now_ms();
        for (stream, until) in [("live", now + 60_000), ("old", now - 1)] {
            ev(Event::Grant {
                peer_id: "C".into(),
                stream: stream.into(),
                expires_ms: until,
                renewed: false,
            });
        }
        let g = ops.grants_json();
        assert_eq!(
            g.as_array().unwrap().len(),
            1,
            "an expired grant is not in force: {g}"
        );
        assert_eq!(g[0]["stream"], "live");
        ev(Event::GrantExpired {
            peer_id: "C".into(),
            stream: "live".into(),
            offset: None,
            path: None,
        });
        assert_eq!(ops.grants_json(), json!([]));
    }
}
