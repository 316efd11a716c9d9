use super::*;

fn key() -> Keypair {
    Keypair::generate_ed25519()
}

#[test]
fn the_ring_keeps_its_cap_and_says_where_each_reader_stands() {
    let mut ring: Ring<&str> = Ring::new(10, 0);
    assert_eq!(ring.lookup(0), Lookup::Wait);
    assert_eq!(ring.push(4, "a"), 0);
    assert_eq!(ring.push(4, "b"), 4);
    assert_eq!(ring.lookup(0), Lookup::Chunk(&"a"));
    assert_eq!(ring.lookup(5), Lookup::Chunk(&"b"), "mid-chunk");
    assert_eq!(ring.lookup(8), Lookup::Wait, "the live edge");
    assert_eq!(ring.lookup(9), Lookup::Ahead { edge: 8 });
    // 12 bytes > 10: the oldest goes.
    assert_eq!(ring.push(4, "c"), 8);
    assert_eq!(ring.held(), 8);
    assert_eq!(ring.lookup(3), Lookup::Gone { earliest: 4 });
    assert_eq!(ring.lookup(4), Lookup::Chunk(&"b"));
    // One chunk larger than the cap is still held (the newest always is).
    ring.push(50, "big");
    assert_eq!(ring.earliest(), 12);
    assert_eq!(ring.lookup(20), Lookup::Chunk(&"big"));
    ring.end("end");
    assert_eq!(ring.lookup(62), Lookup::Chunk(&"end"));
    assert!(ring.ended());
}

#[test]
fn a_ring_for_a_restarted_source_starts_where_asked() {
    let mut ring: Ring<u8> = Ring::new(100, 1_000);
    assert_eq!(ring.lookup(999), Lookup::Gone { earliest: 1_000 });
    assert_eq!(ring.push(10, 1), 1_000);
    assert_eq!(ring.edge(), 1_010);
}

#[test]
fn a_follower_writes_each_byte_once_from_where_it_joined() {
    let k = key();
    let c0 = Chunk::sign(
        &k,
        "ticks",
        7,
        0,
        b"0123456789".to_vec(),
        false,
        1_800_000_000_000,
    );
    let c1 = Chunk::sign(
        &k,
        "ticks",
        7,
        10,
        b"abcdef".to_vec(),
        false,
        1_800_000_000_000,
    );
    let end = Chunk::sign(&k, "ticks", 7, 16, vec![], true, 1_800_000_000_000_000);
    // Joined at 4: the first chunk holds it, its first 4 bytes are skipped.
    let mut f = Follower::new(k.public(), "ticks", 7, 4);
    assert_eq!(f.accept(&c0), Ok(Accepted::Write { skip: 4 }));
    assert_eq!(f.offset(), 10);
    // The same chunk again (a replay) cannot be placed.
    assert_eq!(
        f.accept(&c0),
        Err(ChunkError::OutOfOrder {
            offset: 0,
            expected: 10
        })
    );
    assert_eq!(f.accept(&c1), Ok(Accepted::Write { skip: 0 }));
    assert_eq!(f.accept(&end), Ok(Accepted::End));
    assert!(f.ended());
    assert!(matches!(f.accept(&end), Err(ChunkError::PastEnd { .. })));
}

#[test]
fn an_altered_or_foreign_chunk_is_refused_with_its_offset() {
    let k = key();
    let good = Chunk::sign(
        &k,
        "ticks",
        7,
        0,
        b"0123456789".to_vec(),
        false,
        1_800_000_000_000,
    );
    let mut flipped = good.clone();
    flipped.data[3] ^= 1;
    let mut f = Follower::new(k.public(), "ticks", 7, 0);
    let err = f.accept(&flipped).unwrap_err();
    assert_eq!(err, ChunkError::BadSignature { offset: 0 });
    assert_eq!(err.offset(), Some(0));
    assert_eq!(f.offset(), 0, "nothing accepted");
    // Signed by someone else, for another stream, or another epoch.
    let other = Chunk::sign(
        &key(),
        "ticks",
        7,
        0,
        b"0123456789".to_vec(),
        false,
        1_800_000_000_000,
    );
    assert!(f.accept(&other).is_err());
    let renamed = Chunk::sign(
        &k,
        "other",
        7,
        0,
        b"0123456789".to_vec(),
        false,
        1_800_000_000_000,
    );
    assert!(f.accept(&renamed).is_err());
    let old_epoch = Chunk::sign(
        &k,
        "ticks",
        6,
        0,
        b"0123456789".to_vec(),
        false,
        1_800_000_000_000,
    );
    assert!(f.accept(&old_epoch).is_err());
    // A moved offset breaks the signature too (a chunk replayed elsewhere).
    let mut moved = Chunk::sign(
        &k,
        "ticks",
        7,
        10,
        b"abc".to_vec(),
        false,
        1_800_000_000_000,
    );
    moved.offset = 0;
    assert!(matches!(
        f.accept(&moved),
        Err(ChunkError::BadSignature { .. })
    ));
    assert_eq!(f.accept(&good), Ok(Accepted::Write { skip: 0 }));
    // A gap is refused.
    let gap = Chunk::sign(
        &k,
        "ticks",
        7,
        11,
        b"x".to_vec(),
        false,
        1_800_000_000_000_000,
    );
    assert_eq!(
        f.accept(&gap),
        Err(ChunkError::OutOfOrder {
            offset: 11,
            expected: 10
        })
    );
}

#[test]
fn a_resubscription_may_skip_ahead_or_change_epoch() {
    let k = key();
    let mut f = Follower::new(k.public(), "ticks", 1, 0);
    f.resubscribe(2, 500);
    let c = Chunk::sign(
        &k,
        "ticks",
        2,
        490,
        vec![9; 20],
        false,
        1_800_000_000_000_000,
    );
    assert_eq!(f.accept(&c), Ok(Accepted::Write { skip: 10 }));
    assert_eq!(f.offset(), 510);
    assert_eq!(f.epoch(), 2);
}

#[test]
fn frames_round_trip_and_oversized_ones_are_refused() {
    let k = key();
    let c = Chunk::sign(
        &k,
        "ticks",
        3,
        42,
        vec![1; MAX_CHUNK],
        false,
        1_800_000_000_000,
    );
    let frame = c.encode_frame();
    let (body, used) = split_live_frame(&frame).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert_eq!(Chunk::decode(body).unwrap(), c);
    assert_eq!(split_live_frame(&frame[..frame.len() - 1]).unwrap(), None);
    let mut huge = frame.clone();
    huge[..4].copy_from_slice(&((MAX_LIVE_FRAME + 1) as u32).to_be_bytes());
    assert!(split_live_frame(&huge).is_err());
    let bad_end = pb::LiveChunk {
        offset: 1,
        data: vec![1],
        signature: vec![],
        end: true,
        ts_us: 0,
    }
    .encode_to_vec();
    assert!(Chunk::decode(&bad_end).is_err());
}

#[test]
fn behind_a_buyer_jumps_to_the_edge_only_when_it_may() {
    use crate::RejectReason::*;
    // Joining at a gone offset is refused; losing it while away jumps.
    assert_eq!(on_behind(Gone, true, false), None);
    assert_eq!(on_behind(Gone, false, false), Some("gone"));
    // Cut for being slow: cut, unless it asked to skip ahead.
    assert_eq!(on_behind(TooSlow, false, false), None);
    assert_eq!(on_behind(TooSlow, false, true), Some("too_slow"));
    // Past a restarted provider's edge.
    assert_eq!(on_behind(BadOffset, false, false), Some("restarted"));
    assert_eq!(on_behind(NotAllowed, false, true), None);
}

#[test]
fn a_heartbeat_moves_nothing_and_needs_no_signature() {
    let k = key();
    let mut f = Follower::new(k.public(), "ticks", 7, 10);
    let hb = Chunk::heartbeat(10);
    let (body, _) = {
        let frame = hb.encode_frame();
        let (b, u) = split_live_frame(&frame).unwrap().unwrap();
        (b.to_vec(), u)
    };
    let decoded = Chunk::decode(&body).unwrap();
    assert!(decoded.is_heartbeat());
    assert_eq!(f.accept(&decoded), Ok(Accepted::Heartbeat));
    assert_eq!(f.offset(), 10, "nothing moved");
    // Data still needs its signature after it.
    let c = Chunk::sign(&k, "ticks", 7, 10, b"x".to_vec(), false, 1);
    assert_eq!(f.accept(&c), Ok(Accepted::Write { skip: 0 }));
}
