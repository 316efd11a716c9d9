//! The mesh VPN's metrics: what the tunnel carried and dropped, counted
//! where it happens (exact, unlike the `vpn_dropped` events, which are told
//! at powers of two), and its peers' streams and exit, from its events.

use crate::events::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn l(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// The tunnel's metrics (see the module docs).
pub struct VpnMetrics {
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    streams: Family<Labels, Gauge>,
    exit_up: Gauge,
    /// The counters of each direction, taken from the families once: a
    /// packet's count takes no label lookup.
    by_direction: [(Counter, Counter); 2],
}

impl Default for VpnMetrics {
    fn default() -> Self {
        let packets = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let of = |d: &str| {
            let labels = l("direction", d);
            (
                packets.get_or_create(&labels).clone(),
                bytes.get_or_create(&labels).clone(),
            )
        };
        let by_direction = [of("in"), of("out")];
        Self {
            packets,
            bytes,
            dropped: Default::default(),
            streams: Default::default(),
            exit_up: Default::default(),
            by_direction,
        }
    }
}

impl VpnMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "vpn_packets",
            "Packets the tunnel carried, by direction (in: from peers to the device, out: to peers)",
            self.packets.clone(),
        );
        r.register(
            "vpn_bytes",
            "Bytes of the packets the tunnel carried, by direction",
            self.bytes.clone(),
        );
        r.register(
            "vpn_dropped",
            "Packets the tunnel dropped, by reason (each one, not only those told)",
            self.dropped.clone(),
        );
        r.register(
            "vpn_streams",
            "Peers' packet streams open, by direction (in: the peer opened it, out: we did)",
            self.streams.clone(),
        );
        r.register(
            "vpn_exit_up",
            "1 while this node's exit is connected and its routes go through it",
            self.exit_up.clone(),
        );
    }

    /// A packet of `bytes` went `out` to a peer, or came in from one.
    pub fn carried(&self, out: bool, bytes: usize) {
        let (packets, total) = &self.by_direction[usize::from(out)];
        packets.inc();
        total.inc_by(bytes as u64);
    }

    /// A packet was dropped for `reason`.
    pub fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&l("reason", reason)).inc();
    }

    /// Streams and the exit, from the events.
    pub(super) fn observe(&self, event: &Event) {
        match event {
            Event::VpnPeer {
                state, direction, ..
            } => {
                let gauge = self.streams.get_or_create(&l("direction", direction));
                match *state {
                    "up" => gauge.inc(),
                    _ => gauge.dec(),
                };
            }
            Event::VpnExit { state, .. } if *state != "gateway" => {
                self.exit_up.set(i64::from(*state == "up"));
            }
            _ => {}
        }
    }
}
