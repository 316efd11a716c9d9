//! Wake-ups pushed by the endpoint over a websocket (`eth_subscribe` to new
//! heads or to new pending transactions), so that a follower reads as soon
//! as there is something to read instead of at its next poll.
//!
//! A new head only says "read now": the read goes over HTTP, through the
//! same code, cursors and checks as a poll. A pending transaction comes
//! whole, and is decoded as one read from the pending block would be. So a
//! wake-up that is lost, or a subscription that ends, costs latency and
//! never a message: polling stays underneath, at [`SUBSCRIBED_POLL`] (or the follower's own interval, if
//! longer) while a subscription is live, and at the follower's interval
//! while none is. Each ledger keeps one websocket; each follower has its own
//! subscription on it. A websocket that cannot be opened or subscribed is
//! tried again after [`RETRY`].

use alloy::providers::{DynProvider, Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::Transaction;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait between polls while a subscription is live: a safety
/// net for a wake-up the endpoint never sent.
pub const SUBSCRIBED_POLL: Duration = Duration::from_secs(2);

/// The wait before trying a failed websocket or subscription again.
pub const RETRY: Duration = Duration::from_secs(30);

/// Wake-ups handled at once: a burst beyond this is left for the next read.
const BURST: usize = 1_024;

/// One wake-up: news to read, or (pending transactions) the transaction itself.
pub(super) enum Wake {
    /// Something happened: read.
    News,
    /// A transaction entered the endpoint's pool; here it is.
    Tx(Box<Transaction>),
}

type Wakes = BoxStream<'static, Wake>;

/// What a follower wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A new block (`newHeads`).
    Heads,
    /// A transaction entering the endpoint's pool (`newPendingTransactions`,
    /// whole transactions).
    Pending,
}

/// A ledger's websocket for wake-ups, opened on first use.
#[derive(Debug, Default)]
pub(super) struct WsLink {
    url: Option<String>,
    state: tokio::sync::Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    provider: Option<DynProvider>,
    /// No new attempt before this, after a failed one.
    next_try: Option<Instant>,
    /// Whether the fallback to polling has been logged since the last success.
    said_fallback: bool,
}

impl std::fmt::Debug for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkState")
            .field("open", &self.provider.is_some())
            .field("next_try", &self.next_try)
            .finish()
    }
}

impl WsLink {
    /// A link to `url` (`None`: polling only).
    pub(super) fn new(url: Option<String>) -> WsLink {
        WsLink {
            url,
            state: Default::default(),
        }
    }

    /// A stream of wake-ups of `kind`, or `None` (no websocket configured,
    /// or it failed less than [`RETRY`] ago, or it fails now: within
    /// `timeout` for the connection and again for the subscription).
    async fn subscribe(&self, kind: Kind, timeout: Duration) -> Option<Wakes> {
        let url = self.url.as_deref()?;
        let mut st = self.state.lock().await;
        if st.next_try.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let attempt = async {
            let provider = match &st.provider {
                Some(p) => p.clone(),
                None => {
                    let connect = ProviderBuilder::new().connect_ws(WsConnect::new(url));
                    let p = tokio::time::timeout(timeout, connect)
                        .await
                        .map_err(|_| format!("no websocket within {timeout:?}"))?
                        .map_err(|e| e.to_string())?
                        .erased();
                    st.provider = Some(p.clone());
                    p
                }
            };
            let stream = match kind {
                Kind::Heads => {
                    let sub = tokio::time::timeout(timeout, provider.subscribe_blocks()).await;
                    let sub = sub.map_err(|_| "no answer to eth_subscribe".to_string())?;
                    let sub = sub.map_err(|e| e.to_string())?.into_stream();
                    sub.map(|_| Wake::News).boxed()
                }
                Kind::Pending => {
                    let sub = provider.subscribe_full_pending_transactions();
                    let sub = tokio::time::timeout(timeout, sub).await;
                    let sub = sub.map_err(|_| "no answer to eth_subscribe".to_string())?;
                    let sub = sub.map_err(|e| e.to_string())?.into_stream();
                    sub.map(|tx| Wake::Tx(Box::new(tx))).boxed()
                }
            };
            Ok::<_, String>(stream)
        };
        match attempt.await {
            Ok(stream) => {
                st.next_try = None;
                st.said_fallback = false;
                tracing::debug!(url, ?kind, "subscribed for ledger wake-ups");
                Some(stream)
            }
            Err(e) => {
                st.provider = None;
                st.next_try = Some(Instant::now() + RETRY);
                if !std::mem::replace(&mut st.said_fallback, true) {
                    tracing::info!(url, error = %e, "no websocket wake-ups from the ledger endpoint; polling (trying again every {RETRY:?})");
                }
                None
            }
        }
    }
}

type Subscribing = futures::future::BoxFuture<'static, Option<Wakes>>;

/// One follower's wake-ups.
pub(super) struct Nudges {
    link: Arc<WsLink>,
    kind: Kind,
    timeout: Duration,
    stream: Option<Wakes>,
    /// A subscription under way. It runs beside the follower's waits (a slow
    /// or black-holed websocket never delays a read) and carries over from
    /// one wait to the next until it ends.
    subscribing: Option<Subscribing>,
}

impl Nudges {
    pub(super) fn new(link: Arc<WsLink>, kind: Kind, timeout: Duration) -> Nudges {
        Nudges {
            link,
            kind,
            timeout,
            stream: None,
            subscribing: None,
        }
    }

    /// Whether a subscription is live now.
    #[cfg(test)]
    pub(super) fn live(&self) -> bool {
        self.stream.is_some()
    }

    /// Waits until it is time to read: a wake-up, or `poll` at the latest
    /// (the longer of `poll` and [`SUBSCRIBED_POLL`] while subscribed), and
    /// returns the transactions the wake-ups carried (pending ones; none
    /// after a poll's wait). Wake-ups that came meanwhile are folded into
    /// this one. A subscription that becomes live during the wait ends it
    /// (news may have come while it was being set up).
    pub(super) async fn wait(&mut self, poll: Duration) -> Vec<Transaction> {
        if self.stream.is_none() && self.subscribing.is_none() && self.link.url.is_some() {
            let (link, kind, timeout) = (self.link.clone(), self.kind, self.timeout);
            self.subscribing = Some(async move { link.subscribe(kind, timeout).await }.boxed());
        }
        let mut txs = vec![];
        if let Some(stream) = &mut self.stream {
            tokio::select! {
                () = tokio::time::sleep(poll.max(SUBSCRIBED_POLL)) => {}
                next = stream.next() => match next {
                    Some(first) => {
                        let mut take = |w| {
                            if let Wake::Tx(tx) = w {
                                txs.push(*tx);
                            }
                        };
                        take(first);
                        for _ in 0..BURST {
                            match stream.next().now_or_never() {
                                Some(Some(w)) => take(w),
                                _ => break,
                            }
                        }
                    }
                    None => {
                        tracing::debug!(kind = ?self.kind, "ledger wake-ups ended; polling");
                        self.stream = None;
                    }
                },
            }
            return txs;
        }
        let Some(subscribing) = &mut self.subscribing else {
            tokio::time::sleep(poll).await;
            return txs;
        };
        let sleep = tokio::time::sleep(poll);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => {}
            stream = subscribing => {
                self.subscribing = None;
                match stream {
                    Some(stream) => self.stream = Some(stream),
                    // Not due again yet, or failed: poll out this interval.
                    None => sleep.await,
                }
            }
        }
        txs
    }
}

/// The websocket URL of an HTTP(S) endpoint at the same place (`ws://` for
/// `http://`, `wss://` for `https://`), as many endpoints (anvil among them)
/// serve both on one port.
pub fn ws_url_for(rpc_url: &str) -> Option<String> {
    if let Some(rest) = rpc_url.strip_prefix("http://") {
        Some(format!("ws://{rest}"))
    } else {
        rpc_url
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_url_sits_where_the_http_one_does() {
        assert_eq!(
            ws_url_for("http://127.0.0.1:8545").as_deref(),
            Some("ws://127.0.0.1:8545")
        );
        assert_eq!(
            ws_url_for("https://rpc.example/v1/key").as_deref(),
            Some("wss://rpc.example/v1/key")
        );
        assert_eq!(ws_url_for("ws://127.0.0.1:8545"), None);
    }

    #[tokio::test]
    async fn a_dead_websocket_falls_back_to_polling_and_is_not_retried_at_once() {
        // A port nothing listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let link = Arc::new(WsLink::new(Some(format!("ws://127.0.0.1:{port}"))));
        let mut n = Nudges::new(link.clone(), Kind::Pending, Duration::from_secs(5));
        while n.subscribing.is_some() || link.state.lock().await.next_try.is_none() {
            n.wait(Duration::from_millis(10)).await;
        }
        assert!(!n.live());
        let next_try = link
            .state
            .lock()
            .await
            .next_try
            .expect("a retry is scheduled");
        assert!(next_try > Instant::now() + RETRY - Duration::from_secs(5));
        // Within RETRY, a follower asking again gets no new attempt.
        assert!(link
            .subscribe(Kind::Heads, Duration::from_secs(5))
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_websocket_that_never_answers_does_not_hold_up_the_polls() {
        // A listener that accepts and then says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut conns = vec![];
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let link = Arc::new(WsLink::new(Some(url)));
        let mut n = Nudges::new(link, Kind::Heads, Duration::from_secs(3600));
        // Each wait ends after its poll interval although the subscription
        // hangs: 20 waits of 10 ms, well inside the hour it is given.
        let waits = async {
            for _ in 0..20 {
                n.wait(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), waits)
            .await
            .expect("the waits ended on their own");
        assert!(n.subscribing.is_some() && !n.live());
        held.abort();
    }
}
