//! The streams a provider sells, with their length and digest computed once.

use super::live::{LiveFeed, LiveOptions};
use super::source::Source;
use ledgermesh_protocol::StreamInfo;
use std::collections::HashMap;
use std::sync::Arc;

/// The catalog. Never shown whole to anyone: a peer learns only the streams
/// its grants cover.
#[derive(Debug, Default)]
pub struct Catalog {
    streams: HashMap<String, (Source, StreamInfo)>,
    feeds: HashMap<String, Arc<LiveFeed>>,
    /// One sender at a time per `inbox:` stream.
    inboxes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Catalog {
    /// Describes every finite source (reads each once to hash it); a live
    /// one is started, when `live` options are given (else refused).
    pub async fn build(
        sources: Vec<(String, Source)>,
        live: Option<&LiveOptions>,
    ) -> std::io::Result<Self> {
        let mut streams = HashMap::new();
        let mut feeds = HashMap::new();
        for (name, source) in sources {
            if let Source::Live(spec) = &source {
                let Some(opts) = live else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        format!("stream {name}: live sources are sold by `provide` only"),
                    ));
                };
                let feed = LiveFeed::start(&name, spec.clone(), opts);
                let info = StreamInfo {
                    name: name.clone(),
                    length: None,
                    sha256: None,
                    live: Some(feed.epoch()),
                };
                feeds.insert(name.clone(), feed);
                streams.insert(name, (source, info));
                continue;
            }
            if source.is_inbound() {
                let info = StreamInfo {
                    name: name.clone(),
                    length: None,
                    sha256: None,
                    live: None,
                };
                streams.insert(name, (source, info));
                continue;
            }
            let (len, sha) = source
                .digest()
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("stream {name}: {e}")))?;
            let info = StreamInfo {
                name: name.clone(),
                length: Some(len),
                sha256: Some(sha),
                live: None,
            };
            streams.insert(name, (source, info));
        }
        Ok(Self {
            streams,
            feeds,
            inboxes: Default::default(),
        })
    }

    /// Adds a stream without reading it first: its digest is unknown, so
    /// consumers cannot verify it (for benchmarks and live sources).
    pub async fn insert_undigested(&mut self, name: &str, source: Source) -> std::io::Result<()> {
        let info = StreamInfo {
            name: name.into(),
            length: Some(source.len().await?),
            sha256: None,
            live: None,
        };
        self.streams.insert(name.into(), (source, info));
        Ok(())
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&(Source, StreamInfo)> {
        self.streams.get(name)
    }

    /// Sells `feed` (filled by the caller) as live stream `name`.
    pub fn insert_feed(&mut self, name: &str, feed: Arc<LiveFeed>) {
        let info = StreamInfo {
            name: name.into(),
            length: None,
            sha256: None,
            live: Some(feed.epoch()),
        };
        self.streams.insert(
            name.into(),
            (Source::Live(super::live::LiveSpec::Stdin), info),
        );
        self.feeds.insert(name.into(), feed);
    }

    /// The lock that lets one sender at a time write to inbox `name`.
    pub fn inbox_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        inboxes.entry(name.into()).or_default().clone()
    }

    /// The feed of live stream `name`.
    pub fn feed(&self, name: &str) -> Option<&Arc<LiveFeed>> {
        self.feeds.get(name)
    }

    /// Whether a stream called `name` is on sale.
    pub fn contains(&self, name: &str) -> bool {
        self.streams.contains_key(name)
    }

    /// The description of `name`, when on sale.
    pub fn info(&self, name: &str) -> Option<&StreamInfo> {
        self.streams.get(name).map(|(_, i)| i)
    }
}
