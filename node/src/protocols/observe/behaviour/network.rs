//! The observe behaviour's side of the swarm: connections tracked (and
//! dial-back probes answered), requests and answers, timers.

use super::*;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = <rr::Behaviour<ObserveCodec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.track(id, peer, &[local, remote], remote);
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addrs, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.track(id, peer, &[addr], addr);
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                if self.probes.is_probe(e.connection_id) {
                    // A dial-back that got through: the asker is reachable there.
                    self.finish_probe(e.connection_id, true);
                    self.closing.insert(e.connection_id);
                }
                if self.closing.contains(&e.connection_id) {
                    self.actions.push_back(ToSwarm::CloseConnection {
                        peer_id: e.peer_id,
                        connection: CloseConnection::One(e.connection_id),
                    });
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                self.remotes.remove(&e.connection_id);
                self.closing.remove(&e.connection_id);
            }
            FromSwarm::NewListenAddr(e) => {
                let told = e.addr.iter().any(|p| matches!(p, Protocol::QuicV1))
                    && ip_of(e.addr).is_some_and(|ip| self.allow_private || is_global(ip));
                if told && self.quic_listen.len() < MAX_TOLD && !self.quic_listen.contains(e.addr) {
                    self.quic_listen.push(e.addr.clone());
                }
            }
            FromSwarm::ExpiredListenAddr(e) => self.quic_listen.retain(|a| a != e.addr),
            FromSwarm::DialFailure(e) => {
                self.finish_probe(e.connection_id, false);
                self.closing.remove(&e.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Poll::Ready(action);
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_inner(event);
                    continue;
                }
                Poll::Ready(action) => {
                    return Poll::Ready(action.map_out(|_| unreachable!("handled above")))
                }
                Poll::Pending => {}
            }
            if !self.poll_timer(cx) {
                return Poll::Pending;
            }
        }
    }
}
