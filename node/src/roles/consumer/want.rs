//! `PEERID/STREAM`: what a consumer asks for on the command line.

use crate::source::valid_stream_name;
use libp2p::PeerId;
use std::str::FromStr;

/// Why a `PEERID/STREAM` argument is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WantError {
    /// No `/` between peer and stream.
    #[error("{0:?}: expected PEERID/STREAM")]
    NoSlash(String),
    /// The peer id does not parse.
    #[error("{input:?}: bad peer id: {detail}")]
    BadPeer {
        /// The argument.
        input: String,
        /// Why.
        detail: String,
    },
    /// The stream name is not a valid one.
    #[error("{0:?}: stream names are 1-128 characters of [A-Za-z0-9._-]")]
    BadStream(String),
}

/// One wanted stream: `PEERID/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Want {
    /// The provider.
    pub peer: PeerId,
    /// The stream name.
    pub stream: String,
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.peer, self.stream)
    }
}

impl FromStr for Want {
    type Err = WantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (peer, stream) = s
            .split_once('/')
            .ok_or_else(|| WantError::NoSlash(s.into()))?;
        let peer = peer
            .parse()
            .map_err(|e: libp2p::identity::ParseError| WantError::BadPeer {
                input: s.into(),
                detail: e.to_string(),
            })?;
        if !valid_stream_name(stream) {
            return Err(WantError::BadStream(s.into()));
        }
        Ok(Want {
            peer,
            stream: stream.into(),
        })
    }
}
