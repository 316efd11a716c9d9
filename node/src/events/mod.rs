//! The node's machine-readable events: one JSON object per line on stdout
//! with `--json`. The `event` names and their fields are a contract that
//! scripts and tests depend on: add fields, never rename them.

pub mod human;
mod stdout;

use serde::Serialize;
use tokio::sync::broadcast;

pub use ledgermesh_protocol::path::{ChangeReason, PathKind, Route, TransportKind};

/// Declares an event field's closed set of values: serialised as the
/// snake-case strings the contract names, and readable as them.
macro_rules! outcomes {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            /// The name the JSON event carries.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s),+
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

outcomes! {
    /// Which part of the node an `error` event is about (its `what`).
    ErrorPart {
        /// The access-control list.
        Acl => "acl",
        /// The audit log.
        Audit => "audit",
        /// The ledger cursor kept across restarts.
        Cursor => "cursor",
        /// Dialing a peer.
        Dial => "dial",
        /// A ledger envelope that did not open.
        Envelope => "envelope",
        /// The ledger endpoint.
        Ledger => "ledger",
        /// A listener.
        Listen => "listen",
        /// A live chunk that did not verify.
        LiveChunk => "live_chunk",
        /// A live stream's source.
        LiveSource => "live_source",
        /// The provider role stopped on an error (in-process networks).
        Provider => "provider",
        /// A relay reservation.
        Relay => "relay",
        /// A service request on the ledger.
        ServiceRequest => "service_request",
        /// A service response on the ledger.
        ServiceResponse => "service_response",
        /// Serving or fetching a stream.
        Stream => "stream",
        /// A stream the provider refused.
        StreamRejected => "stream_rejected",
        /// A fetched stream whose hash is not the provider's.
        Verify => "verify",
        /// The vouchers kept for claiming.
        Vouchers => "vouchers",
    }
}

outcomes! {
    /// What became of a reservation on a relay (`relay_reservation`).
    ReservationOutcome {
        /// Taken.
        Accepted => "accepted",
        /// Taken again before it ran out.
        Renewed => "renewed",
        /// Refused (`reason`, `status` say why).
        Refused => "refused",
        /// The holder's connection closed.
        Closed => "closed",
        /// Not renewed in time.
        TimedOut => "timed_out",
    }
}

outcomes! {
    /// What became of a circuit through a relay (`relay_circuit`).
    CircuitOutcome {
        /// Carrying.
        Opened => "opened",
        /// Refused (`reason`, `status` say why).
        Refused => "refused",
        /// Ended (with what it carried).
        Closed => "closed",
    }
}

outcomes! {
    /// How a hard-NAT attempt ended (`hard_nat`).
    HardNatOutcome {
        /// A direct connection came up.
        Direct => "direct",
        /// Tried, and no direct connection came.
        Failed => "failed",
        /// Not tried (`reason` says why).
        Declined => "declined",
    }
}

/// One event. Serialized with an `event` tag in snake case.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The node listens on these addresses (sent again whenever the set changes).
    Listening {
        /// This node.
        peer_id: String,
        /// Every listen address, relay circuits included.
        addrs: Vec<String>,
    },
    /// A relay accepted our reservation.
    ReservationAccepted {
        /// The relay.
        relay: String,
        /// The circuit address peers can dial us at.
        addr: String,
    },
    /// A relay refused our reservation (its policy, payment or capacity);
    /// `reason` holds what the relay client reported.
    ReservationRefused {
        /// The relay.
        relay: String,
        /// Why.
        reason: String,
    },
    /// (Relay role) a peer's reservation on us changed: `accepted`,
    /// `renewed`, `refused`, `closed` or `timed_out`.
    RelayReservation {
        /// The reserving peer.
        peer_id: String,
        /// What happened.
        outcome: ReservationOutcome,
        /// Why, for a refusal.
        reason: Option<String>,
        /// The circuit relay v2 status a refusal was answered with
        /// (`RESERVATION_REFUSED`, `RESOURCE_LIMIT_EXCEEDED`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// (Relay role) a circuit through us: `opened`, `refused` or `closed`.
    RelayCircuit {
        /// The peer that asked for the circuit.
        src: String,
        /// The peer it asked to reach.
        dst: String,
        /// What happened.
        outcome: CircuitOutcome,
        /// Why, for a refusal or a close with an error.
        reason: Option<String>,
        /// The circuit relay v2 status a refusal was answered with
        /// (`PERMISSION_DENIED`, `NO_RESERVATION`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// (`closed`) bytes carried from `src` to `dst`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_to_dst: Option<u64>,
        /// (`closed`) bytes carried from `dst` to `src`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_to_src: Option<u64>,
    },
    /// We opened a payment channel (payer).
    ChannelOpened {
        /// The payee's account.
        payee: String,
        /// The channel id, hex.
        channel: String,
        /// Wei locked (decimal).
        deposit: String,
        /// The transaction, where there is a chain.
        tx: Option<String>,
        /// Its gas.
        gas_used: Option<u64>,
    },
    /// We signed and sent a voucher (payer).
    VoucherSent {
        /// The payee's PeerId.
        payee: String,
        /// The channel id, hex.
        channel: String,
        /// Wei owed in all (decimal).
        cumulative: String,
    },
    /// A checked voucher arrived (payee).
    VoucherReceived {
        /// The payer's PeerId.
        payer: String,
        /// The channel id, hex.
        channel: String,
        /// Wei owed in all (decimal).
        cumulative: String,
        /// Bytes metered for the payer so far.
        bytes: u64,
    },
    /// A payment message was refused, by us or by the peer.
    PaymentRefused {
        /// The other side.
        peer_id: String,
        /// `no_channel`, `bad_voucher`, `overbilled`, `unpaid`, ...: the
        /// name of a typed cause (its `as_str`), never free text.
        reason: &'static str,
        /// Details for people.
        detail: String,
    },
    /// (Relay role) a peer was refused service for want of payment.
    RelayRefused {
        /// The peer.
        peer_id: String,
        /// Why.
        reason: String,
    },
    /// We claimed on chain (payee).
    Claimed {
        /// The channel id, hex.
        channel: String,
        /// Wei paid to us by this claim (decimal).
        amount: String,
        /// The transaction, where there is a chain.
        tx: Option<String>,
        /// Its gas.
        gas_used: Option<u64>,
    },
    /// A claim brought nothing (payee): `reason` is `nothing_to_claim`,
    /// `no_such_channel`, `reverted` or `rpc` (kept and tried again).
    ClaimFailed {
        /// The channel id, hex.
        channel: String,
        /// Why.
        reason: String,
        /// Details for people.
        detail: String,
    },
    /// Vouchers we hold can no longer be claimed (payee): the channel is gone.
    VoucherLost {
        /// The channel id, hex.
        channel: String,
        /// Wei held above what was claimed (decimal).
        amount: String,
    },
    /// The node stopped: its tasks ended and its connections closed.
    Shutdown {
        /// Why: `signal` (SIGINT/SIGTERM), `finished` (a consumer done) or
        /// `requested` (the library's caller).
        reason: String,
        /// How long stopping took.
        ms: u64,
        /// Tasks that had not ended when it gave up waiting (0 normally).
        tasks_left: usize,
    },
    /// The result of an address-consensus round.
    PublicAddress {
        /// The accepted public address (only with endpoint-independent mapping).
        addr: Option<String>,
        /// The accepted public IP.
        ip: Option<String>,
        /// `endpoint-independent`, `endpoint-dependent` or `unknown`.
        mapping: String,
        /// What a quorum of dial-backs said, when there is one.
        reachable: Option<bool>,
        /// Observers asked (K); the quorum is over these.
        observers: usize,
        /// Observers agreeing on the accepted IP.
        agreeing: usize,
        /// Observers that answered (of `observers` asked).
        answered: usize,
        /// Each observer's answer.
        answers: Vec<String>,
    },
    /// We started following our `stdin` topic on the ledger.
    LedgerFollowing {
        /// Topic, hex.
        topic: String,
        /// The ledger.
        ledger: String,
        /// Cursor we follow from: block (sequence number for the memory ledger).
        from_block: u64,
        /// Cursor we follow from: index within the block.
        from_index: u64,
    },
    /// We posted to the ledger.
    LedgerPost {
        /// Topic, hex.
        topic: String,
        /// Message kind (`service_request`, `service_response`).
        kind: String,
        /// Payload size.
        bytes: usize,
        /// Transaction hash (EVM ledger).
        #[serde(skip_serializing_if = "Option::is_none")]
        tx: Option<String>,
        /// Gas used (EVM ledger).
        #[serde(skip_serializing_if = "Option::is_none")]
        gas_used: Option<u64>,
    },
    /// The block of the saved ledger cursor was replaced while the node was
    /// away (a reorg): it reads again from `from_block`.
    LedgerReorg {
        /// The block whose hash no longer matches.
        block: u64,
        /// Where reading starts again (messages after this block).
        from_block: u64,
    },
    /// We read and accepted a ledger message addressed to us.
    LedgerMessage {
        /// Topic, hex.
        topic: String,
        /// Message kind.
        kind: String,
        /// Sender PeerId (verified by signature).
        from: String,
        /// Payload size.
        bytes: usize,
        /// Read from the ledger's pending pool, before any block held it
        /// (`--read-pending`); absent when read from a block.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pending: bool,
    },
    /// A connection was established.
    Connected {
        /// The remote peer.
        peer_id: String,
        /// Direct or relayed.
        path: PathKind,
        /// Transport (to the relay, when relayed).
        transport: TransportKind,
        /// Relay PeerId when relayed.
        via: Option<String>,
        /// Whether we dialed.
        dialer: bool,
        /// Remote address of the connection.
        remote_addr: String,
    },
    /// A direct connection replaced a relayed one to the same peer.
    Upgraded {
        /// The remote peer.
        peer_id: String,
        /// Transport of the direct connection.
        transport: TransportKind,
        /// Time since the relayed connection was established.
        ms_after_relayed: u64,
    },
    /// A hole punch (DCUtR) failed; traffic stays on the relay.
    HolePunchFailed {
        /// The remote peer.
        peer_id: String,
        /// Why.
        reason: String,
    },
    /// A hard-NAT attempt (`--hard-nat`) with a peer ended: one side behind
    /// an endpoint-dependent NAT (`hard`, it opened `sockets` sockets), the
    /// other behind an endpoint-independent one (`easy`, it sent `probes`
    /// one-packet probes). `outcome`: `direct` (a direct QUIC connection came
    /// up; `ms` from the offer), `failed` (none did) or `declined` (no
    /// attempt; `reason` says why: `both_endpoint_dependent`,
    /// `mapping_unknown`, `no_quic_address`, `bad_address`, `busy`,
    /// `cooldown`, `disabled`, or a protocol error).
    HardNat {
        /// The remote peer.
        peer_id: String,
        /// `hard` or `easy`.
        role: &'static str,
        /// `direct`, `failed` or `declined`.
        outcome: HardNatOutcome,
        /// Why it was declined or failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Sockets the hard side opened (N).
        sockets: u16,
        /// Probes the easy side sent (M); one UDP packet each.
        probes: u16,
        /// The chance the plan had: 1 − e^(−N·M/64512).
        chance: f64,
        /// From the offer to the direct connection (or to giving up).
        ms: u64,
        /// The direct address, when one came up.
        #[serde(skip_serializing_if = "Option::is_none")]
        remote_addr: Option<String>,
    },
    /// (VPN) the tunnel is up: the TUN device `tun` carries `address`, the
    /// node's address in the mesh (from its key), with `mtu`.
    VpnUp {
        /// The node's mesh address.
        address: String,
        /// The device's name.
        tun: String,
        /// The device's MTU.
        mtu: u16,
    },
    /// (VPN) packets dropped: `count` so far of `reason` (`malformed`,
    /// `too_big`, `no_route`, `not_allowed`, `spoofed_source`,
    /// `not_for_us`, `not_from_us`, `congested`, `private_destination`)
    /// from or to `peer_id`
    /// (absent for our own device's packets that went to no peer). Told at
    /// the 1st, 2nd, 4th, 8th, … of each reason and peer, so a flood cannot
    /// flood the log.
    VpnDropped {
        /// The peer, when one is concerned.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer_id: Option<String>,
        /// Why.
        reason: &'static str,
        /// Dropped so far for this reason and peer.
        count: u64,
    },
    /// (VPN) an exit: `gateway` when this node became one (it forwards its
    /// peers' traffic behind its own address); otherwise the exit this
    /// node sends `routes` through, `up` once it is reached and the routes
    /// go into the tunnel, `down` when it is lost (the routes go back to
    /// the host's own, unless `kill_switch` holds them).
    VpnExit {
        /// The exit (ourselves for `gateway`).
        peer_id: String,
        /// `gateway`, `up` or `down`.
        state: &'static str,
        /// The networks sent through the exit (none for `gateway`).
        routes: Vec<String>,
        /// Whether packets outside the tunnel are stopped.
        kill_switch: bool,
    },
    /// (VPN) a peer's packet stream opened (`up`) or ended (`down`); `in`:
    /// the peer opened it, `out`: we did.
    VpnPeer {
        /// The peer.
        peer_id: String,
        /// Its address in the mesh.
        address: String,
        /// `up` or `down`.
        state: &'static str,
        /// `in` or `out`.
        direction: &'static str,
    },
    /// A connection closed.
    Disconnected {
        /// The remote peer.
        peer_id: String,
        /// Direct or relayed.
        path: PathKind,
        /// Why, when known.
        cause: Option<String>,
    },
    /// The route of the traffic to a peer changed: upgraded to direct, or
    /// moved off a relay (or a direct path) that closed, or back after none.
    PathChanged {
        /// The peer.
        peer_id: String,
        /// The route before (`path`, `transport`, `via`), null when none.
        from: Option<Route>,
        /// The route now, null when no connection is left.
        to: Option<Route>,
        /// `upgraded`, `relay_lost`, `direct_lost` or `reconnected`.
        reason: ChangeReason,
    },
    /// The relayed path carrying the traffic to a peer turned red (slow or
    /// lossy, three pings in a row): another is dialed, and once it is up
    /// the traffic moves (`path_changed` with reason `degraded`).
    PathDegraded {
        /// The peer.
        peer_id: String,
        /// The relay of the degraded path.
        via: Option<String>,
        /// Its round trip (moving average), ms.
        rtt_ms: Option<u64>,
        /// Its lost pings (of the last ten), percent.
        loss_pct: u32,
    },
    /// A stream that broke delivers again, on whatever path is left.
    StreamResumed {
        /// The provider.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// Where it resumed.
        offset: u64,
        /// From the break to the first byte after it, ms.
        stalled_ms: u64,
    },
    /// A data stream was (re)opened from an offset.
    StreamOpened {
        /// The provider.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// First byte asked for.
        offset: u64,
    },
    /// A data stream was received completely.
    StreamDone {
        /// The provider.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// Bytes received.
        bytes: u64,
        /// SHA-256 of what was received, hex.
        sha256: String,
        /// Whether it matches the provider's announced SHA-256.
        verified: bool,
        /// Wall time from first request to last byte.
        ms: u64,
        /// How many times the stream was resumed on a new path.
        resumes: u32,
        /// Where it was written.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// When the first data byte arrived (unix ms).
        #[serde(skip_serializing_if = "Option::is_none")]
        first_byte_ts_ms: Option<u64>,
        /// A live stream: where it was joined, chunks, lag and gaps.
        #[serde(skip_serializing_if = "Option::is_none")]
        live: Option<LiveSummary>,
    },
    /// The HTTP API (`--api`) is serving here.
    ApiListening {
        /// The bound address.
        addr: String,
    },
    /// `consume --listen-local`: local TCP clients get the stream here.
    LocalListening {
        /// The address.
        addr: String,
    },
    /// A live stream skipped bytes: the consumer fell behind and asked for
    /// the live edge (`--skip-ahead`), its offset left the provider's buffer
    /// while the path was down, or the provider restarted.
    Gap {
        /// The provider.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// The offset the consumer had reached.
        from: u64,
        /// Where it goes on (in the new epoch when the provider restarted).
        to: u64,
        /// Bytes skipped (0 when the provider restarted: offsets start over).
        bytes: u64,
        /// `too_slow`, `gone` or `restarted`.
        reason: String,
    },
    /// A provider finished sending a stream to a consumer.
    StreamServed {
        /// The consumer.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// Offset it started at.
        offset: u64,
        /// Bytes sent.
        bytes: u64,
    },
    /// A grant was issued or renewed (provider: to the peer; consumer: by the peer).
    Grant {
        /// The other party (the consumer on a provider, the provider on a consumer).
        peer_id: String,
        /// Stream name.
        stream: String,
        /// When the grant ends, unix ms.
        expires_ms: u64,
        /// Whether it extended a grant that was still running.
        renewed: bool,
    },
    /// A provider refused a stream to a peer (no bytes, no catalog were sent).
    AccessRefused {
        /// The peer refused.
        peer_id: String,
        /// Stream name as asked.
        stream: String,
        /// `not_allowed`, `grant_expired`, `unknown_stream`, `busy`, `bad_offset`, ...
        reason: String,
    },
    /// A grant ran out (provider), or a consumer was told its grant ran out.
    GrantExpired {
        /// The other party.
        peer_id: String,
        /// Stream name.
        stream: String,
        /// Consumer: bytes received and kept when the stream ended.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// Consumer: the file holding them.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// A provider's ACL took effect (at start and after each good reload).
    AclReloaded {
        /// Where it came from and how many entries.
        detail: String,
    },
    /// Something went wrong; the node keeps running.
    Error {
        /// Which part (`envelope`, `relay`, `dial`, `stream`, `stream_rejected`, `ledger`, ...).
        what: ErrorPart,
        /// Human-readable detail.
        detail: String,
        /// Machine-readable reason, where there is one: the name of a
        /// typed cause (its `as_str`), never free text.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        /// The peer concerned, where there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer_id: Option<String>,
    },
}

impl Event {
    /// Shorthand for an [`Event::Error`].
    pub fn error(what: ErrorPart, detail: impl ToString) -> Self {
        Event::Error {
            what,
            detail: detail.to_string(),
            reason: None,
            peer_id: None,
        }
    }
}

/// An event as published: which node, when, what.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Milliseconds since the unix epoch.
    pub ts_ms: u64,
    /// Label of the node that emitted it.
    pub node: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

pub use crate::clock::{now_ms, now_us};

/// How a live subscription went (in `stream_done`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveSummary {
    /// The first offset written (where it joined).
    pub from_offset: u64,
    /// The offset just past the last byte written.
    pub to_offset: u64,
    /// Chunks verified and written.
    pub chunks: u64,
    /// Bytes skipped in gaps.
    pub gap_bytes: u64,
    /// Gaps.
    pub gaps: u32,
    /// The source ended (rather than the consumer stopping).
    pub source_ended: bool,
    /// Lag from the provider reading a chunk to it being written here, ms
    /// to the µs (median, 99th percentile, worst; the two clocks' skew
    /// included).
    pub lag_ms_p50: f64,
    /// See `lag_ms_p50`.
    pub lag_ms_p99: f64,
    /// See `lag_ms_p50`.
    pub lag_ms_max: f64,
}

/// Capacity of each node's event channel. A subscriber that falls this far
/// behind is told how many events it missed.
pub const EVENT_CAPACITY: usize = 16_384;

/// Publishes a node's events to every subscriber.
#[derive(Debug, Clone)]
pub struct Emitter {
    node: String,
    tx: broadcast::Sender<Record>,
    /// The listener every event is handed to as it is emitted (the
    /// operator's view: status, metrics), attached once.
    tap: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn Tap>>>,
    /// Print JSON lines on stdout; shared by clones so it can be turned off
    /// for a node as a whole.
    json_stdout: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Tell each event worth telling as a line in the log (a node run by a
    /// person, without `--json`).
    human_log: bool,
}

/// A listener handed every event synchronously as it is emitted, before
/// the JSON line and the subscribers (so a status read after an event sees
/// it). It must not block.
pub trait Tap: std::any::Any + Send + Sync + std::fmt::Debug {
    /// Takes in one event.
    fn observe(&self, event: &Event);
}

impl Emitter {
    /// An emitter labelling its records with `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            tx: broadcast::channel(EVENT_CAPACITY).0,
            tap: Default::default(),
            json_stdout: Default::default(),
            human_log: false,
        }
    }

    /// Also tells events as human lines in the log ([`human::line`]).
    pub fn with_human_log(mut self, on: bool) -> Self {
        self.human_log = on;
        self
    }

    /// Also print every event as one JSON line on stdout. Lines go through a
    /// bounded queue to one writer thread, so a slow pipe never stalls the
    /// node: past the queue, lines are dropped and counted (an
    /// `events_dropped` line says how many). Call [`flush_stdout`] before
    /// the process exits.
    pub fn with_json_stdout(self, on: bool) -> Self {
        self.json_stdout
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Stops printing JSON lines (events still reach subscribers).
    pub fn mute_json(&self) {
        self.json_stdout
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Publishes `event` (dropped when nobody listens).
    pub fn emit(&self, event: Event) {
        tracing::debug!(node = %self.node, ?event, "event");
        if self.human_log {
            match human::line(&event) {
                Some((human::Loudness::Info, text)) => {
                    tracing::info!(target: "ledgermesh", "{text}")
                }
                Some((human::Loudness::Warn, text)) => {
                    tracing::warn!(target: "ledgermesh", "{text}")
                }
                Some((human::Loudness::Debug, text)) if !text.is_empty() => {
                    tracing::debug!(target: "ledgermesh", "{text}")
                }
                _ => {}
            }
        }
        let record = Record {
            ts_ms: now_ms(),
            node: self.node.clone(),
            event,
        };
        if let Some(t) = self.tap.get() {
            t.observe(&record.event);
        }
        if self.json_stdout.load(std::sync::atomic::Ordering::Relaxed) {
            stdout::global().offer(serde_json::to_string(&record).unwrap_or_default());
        }
        let _ = self.tx.send(record);
    }

    /// The tap of this emitter (and its clones): the one attached first,
    /// else `make()`'s, attached now. `None` when a tap of another type was
    /// attached before.
    pub fn tap_or_attach<T: Tap>(&self, make: impl FnOnce() -> T) -> Option<std::sync::Arc<T>> {
        let tap = self.tap.get_or_init(|| std::sync::Arc::new(make())).clone();
        let any: std::sync::Arc<dyn std::any::Any + Send + Sync> = tap;
        any.downcast::<T>().ok()
    }

    /// A new subscriber that sees every later event.
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.tx.subscribe()
    }

    /// The node label.
    pub fn node(&self) -> &str {
        &self.node
    }
}

/// Prints one serializable value as a JSON line on stdout, after every
/// event line queued before it (waits for room in the queue: for final
/// outputs, not for the node's hot paths).
pub fn print_json_line<T: Serialize>(value: &T) {
    stdout::global().send(serde_json::to_string(value).unwrap_or_default());
}

/// Writes the JSON lines to `path` instead of stdout (`consume --events`);
/// call before any event is emitted.
pub fn json_to_file(path: &std::path::Path) -> std::io::Result<()> {
    stdout::to_file(path)
}

/// Waits (up to 2 s) until every queued JSON line is written and flushed.
pub fn flush_stdout() {
    stdout::global().flush(std::time::Duration::from_secs(2));
}

/// Lines dropped so far because the stdout queue was full.
pub fn dropped_stdout_lines() -> u64 {
    (stdout::global().dropped).load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_outcomes_serialise_to_the_contract_strings() {
        let e = Event::RelayReservation {
            peer_id: "P".into(),
            outcome: ReservationOutcome::TimedOut,
            reason: None,
            status: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "relay_reservation");
        assert_eq!(v["outcome"], "timed_out");
        for (o, s) in [
            (CircuitOutcome::Opened, "opened"),
            (CircuitOutcome::Refused, "refused"),
            (CircuitOutcome::Closed, "closed"),
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), s);
            assert!(o == s && format!("{o}") == s);
        }
        for (o, s) in [
            (HardNatOutcome::Direct, "direct"),
            (HardNatOutcome::Failed, "failed"),
            (HardNatOutcome::Declined, "declined"),
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), s);
        }
        assert_eq!(
            serde_json::to_value(ReservationOutcome::Renewed).unwrap(),
            "renewed"
        );
    }
}
