//! The streams a provider sells, with their length and digest computed once.

use super::source::Source;
use ledgermesh_protocol::StreamInfo;
use std::collections::HashMap;

/// The catalog. Never shown whole to anyone: a peer learns only the streams
/// its grants cover.
#[derive(Debug, Default)]
pub struct Catalog {
    streams: HashMap<String, (Source, StreamInfo)>,
}

impl Catalog {
    /// Describes every source (reads each once to hash it).
    pub async fn build(sources: Vec<(String, Source)>) -> std::io::Result<Self> {
        let mut streams = HashMap::new();
        for (name, source) in sources {
            let (len, sha) = source
                .digest()
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("stream {name}: {e}")))?;
            let info = StreamInfo {
                name: name.clone(),
                length: Some(len),
                sha256: Some(sha),
            };
            streams.insert(name, (source, info));
        }
        Ok(Self { streams })
    }

    /// Adds a stream without reading it first: its digest is unknown, so
    /// consumers cannot verify it (for benchmarks and live sources).
    pub async fn insert_undigested(&mut self, name: &str, source: Source) -> std::io::Result<()> {
        let info = StreamInfo {
            name: name.into(),
            length: Some(source.len().await?),
            sha256: None,
        };
        self.streams.insert(name.into(), (source, info));
        Ok(())
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&(Source, StreamInfo)> {
        self.streams.get(name)
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
