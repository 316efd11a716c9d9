//! The node's own libp2p protocols, one folder each.

pub mod hardnat;
pub mod observe;
pub mod pay;
pub mod relay;
pub mod stream;
pub mod vpn;

/// An I/O error as a person reads it: the muxer's internal stream label
/// (`00000002/1: connection is closed`) left out.
pub(crate) fn plain_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((label, rest)) if is_stream_label(label) => rest.to_string(),
        _ => text,
    }
}

/// `XXXXXXXX/N`: eight hex digits (the connection), a slash, a number.
fn is_stream_label(s: &str) -> bool {
    s.split_once('/').is_some_and(|(conn, n)| {
        conn.len() == 8
            && conn.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_muxers_stream_labels_are_left_out_of_messages() {
        let e = std::io::Error::other("00000002/1: connection is closed");
        assert_eq!(super::plain_io(&e), "connection is closed");
        let e = std::io::Error::other("0000ab0f/12: stream reset");
        assert_eq!(super::plain_io(&e), "stream reset");
        for kept in [
            "/tmp/x: No such file",
            "feed: refused",
            "0000000g/1: x",
            "00000002/: x",
        ] {
            assert_eq!(super::plain_io(&std::io::Error::other(kept)), kept);
        }
    }
}
