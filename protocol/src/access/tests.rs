//! The access machine on virtual time: no clock, no sockets.

use super::*;
use std::collections::BTreeSet;

const T0: u64 = 1_800_000_000_000;

fn peer() -> PeerId {
    libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn catalog(name: &str) -> bool {
    matches!(name, "feed" | "logs")
}

fn drain(ac: &mut AccessControl) -> Vec<AuditRecord> {
    std::iter::from_fn(|| ac.poll_audit()).collect()
}

#[test]
fn a_stranger_is_not_allowed_and_learns_nothing() {
    let ac = AccessControl::new(3600);
    let stranger = peer();
    assert_eq!(ac.check(T0, &stranger, "feed"), Err(Denial::NotAllowed));
    // Unknown and known names look the same to a peer without a grant.
    assert_eq!(ac.check(T0, &stranger, "nope"), Err(Denial::NotAllowed));
    assert!(!Denial::NotAllowed.detail().contains("feed"));
}

#[test]
fn a_request_grants_what_exists_for_the_hired_period_capped() {
    let mut ac = AccessControl::new(60);
    let p = peer();
    let v = ac.handle_request(T0, p, &names(&["feed", "nope"]), 10, catalog);
    assert_eq!(
        v,
        vec![
            RequestVerdict::Granted {
                stream: "feed".into(),
                expires_ms: T0 + 10_000,
                renewed: false
            },
            RequestVerdict::Unknown("nope".into()),
        ]
    );
    assert_eq!(
        ac.check(T0 + 9_999, &p, "feed"),
        Ok(Allowed {
            until_ms: Some(T0 + 10_000)
        })
    );
    assert_eq!(ac.check(T0, &p, "logs"), Err(Denial::NotAllowed));
    // Hiring for longer than the cap gets the cap; 0 asks for the cap.
    let q = peer();
    let v = ac.handle_request(T0, q, &names(&["feed"]), 1_000_000, catalog);
    assert!(
        matches!(&v[0], RequestVerdict::Granted { expires_ms, .. } if *expires_ms == T0 + 60_000)
    );
    let r = peer();
    let v = ac.handle_request(T0, r, &names(&["logs"]), 0, catalog);
    assert!(
        matches!(&v[0], RequestVerdict::Granted { expires_ms, .. } if *expires_ms == T0 + 60_000)
    );
    let audit = drain(&mut ac);
    assert_eq!(audit[0].kind, AuditKind::Grant);
    assert_eq!(audit[0].expires_ms, Some(T0 + 10_000));
    assert_eq!(audit[1].kind, AuditKind::Refuse);
    assert_eq!(audit[1].reason.as_deref(), Some("unknown_stream"));
}

#[test]
fn a_grant_expires_on_time_and_the_peer_is_told_grant_expired() {
    let mut ac = AccessControl::new(3600);
    let p = peer();
    ac.handle_request(T0, p, &names(&["feed"]), 5, catalog);
    drain(&mut ac);
    assert_eq!(ac.poll_timeout(T0), Some(T0 + 5_000));
    // At the deadline, even before the timeout is handled, access is over.
    assert_eq!(ac.check(T0 + 5_000, &p, "feed"), Err(Denial::GrantExpired));
    ac.handle_timeout(T0 + 5_000);
    let audit = drain(&mut ac);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, AuditKind::Expire);
    assert_eq!(audit[0].reason.as_deref(), Some("grant_expired"));
    assert_eq!(ac.check(T0 + 6_000, &p, "feed"), Err(Denial::GrantExpired));
    // Another peer never held one.
    assert_eq!(
        ac.check(T0 + 6_000, &peer(), "feed"),
        Err(Denial::NotAllowed)
    );
    // After a long while the expired grant is forgotten.
    assert_eq!(
        ac.poll_timeout(T0 + 6_000),
        Some(T0 + 5_000 + EXPIRED_MEMORY_MS)
    );
    ac.handle_timeout(T0 + 5_000 + EXPIRED_MEMORY_MS);
    assert_eq!(
        ac.check(T0 + 5_000 + EXPIRED_MEMORY_MS, &p, "feed"),
        Err(Denial::NotAllowed)
    );
    assert_eq!(ac.poll_timeout(T0 + 5_000 + EXPIRED_MEMORY_MS), None);
}

#[test]
fn a_later_request_renews_and_never_shortens() {
    let mut ac = AccessControl::new(3600);
    let p = peer();
    ac.handle_request(T0, p, &names(&["feed"]), 100, catalog);
    let v = ac.handle_request(T0 + 50_000, p, &names(&["feed"]), 10, catalog);
    assert_eq!(
        v[0],
        RequestVerdict::Granted {
            stream: "feed".into(),
            expires_ms: T0 + 100_000,
            renewed: true
        },
        "a shorter renewal keeps the longer grant"
    );
    let v = ac.handle_request(T0 + 90_000, p, &names(&["feed"]), 100, catalog);
    assert!(
        matches!(&v[0], RequestVerdict::Granted { expires_ms, renewed: true, .. } if *expires_ms == T0 + 190_000)
    );
    let kinds: Vec<AuditKind> = drain(&mut ac).iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [AuditKind::Grant, AuditKind::Renew, AuditKind::Renew]
    );
    // Expired, then asked again: a fresh grant, access restored.
    ac.handle_timeout(T0 + 190_000);
    assert_eq!(
        ac.check(T0 + 190_001, &p, "feed"),
        Err(Denial::GrantExpired)
    );
    let v = ac.handle_request(T0 + 200_000, p, &names(&["feed"]), 10, catalog);
    assert!(matches!(
        &v[0],
        RequestVerdict::Granted { renewed: false, .. }
    ));
    assert!(ac.check(T0 + 200_001, &p, "feed").is_ok());
}

#[test]
fn acl_entries_allow_revoke_and_expire() {
    let mut ac = AccessControl::new(3600);
    let friend = peer();
    let other = peer();
    ac.set_acl(
        T0,
        Acl {
            entries: vec![
                AclEntry {
                    peer: PeerMatch::Peer(friend),
                    streams: StreamMatch::Any,
                    expires_ms: None,
                },
                AclEntry {
                    peer: PeerMatch::Any,
                    streams: StreamMatch::Names(BTreeSet::from(["logs".to_string()])),
                    expires_ms: Some(T0 + 1_000),
                },
            ],
        },
        "acl.toml",
    );
    assert_eq!(
        ac.check(T0, &friend, "feed"),
        Ok(Allowed { until_ms: None })
    );
    assert_eq!(
        ac.check(T0, &other, "logs"),
        Ok(Allowed {
            until_ms: Some(T0 + 1_000)
        })
    );
    assert_eq!(ac.check(T0, &other, "feed"), Err(Denial::NotAllowed));
    assert_eq!(ac.poll_timeout(T0), Some(T0 + 1_000));
    assert_eq!(
        ac.check(T0 + 1_000, &other, "logs"),
        Err(Denial::NotAllowed)
    );
    // Revoked by a new ACL.
    ac.set_acl(T0 + 2_000, Acl::default(), "acl.toml");
    assert_eq!(
        ac.check(T0 + 2_000, &friend, "feed"),
        Err(Denial::NotAllowed)
    );
    ac.acl_rejected(T0 + 3_000, "line 2: bad peer id");
    let kinds: Vec<AuditKind> = drain(&mut ac).iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::AclReload,
            AuditKind::AclReload,
            AuditKind::AclError
        ]
    );
}

#[test]
fn a_grant_and_an_acl_entry_give_the_later_end() {
    let mut ac = AccessControl::new(3600);
    let p = peer();
    ac.handle_request(T0, p, &names(&["feed"]), 10, catalog);
    ac.set_acl(
        T0,
        Acl {
            entries: vec![AclEntry {
                peer: PeerMatch::Peer(p),
                streams: StreamMatch::Any,
                expires_ms: Some(T0 + 20_000),
            }],
        },
        "acl",
    );
    assert_eq!(
        ac.check(T0, &p, "feed"),
        Ok(Allowed {
            until_ms: Some(T0 + 20_000)
        })
    );
    assert_eq!(
        ac.check(T0, &p, "x").map(|a| a.until_ms),
        Ok(Some(T0 + 20_000))
    );
}

#[test]
fn the_grant_table_is_bounded() {
    let mut ac = AccessControl::new(3600);
    for _ in 0..MAX_GRANTS / 2 {
        ac.handle_request(T0, peer(), &names(&["feed", "logs"]), 10, catalog);
    }
    assert_eq!(ac.grant_count(), MAX_GRANTS);
    // Full of strangers' grants: a newcomer's replaces the soonest-ending.
    let late = peer();
    let v = ac.handle_request(T0, late, &names(&["feed"]), 5, catalog);
    assert!(matches!(v[0], RequestVerdict::Granted { .. }), "{v:?}");
    assert_eq!(ac.grant_count(), MAX_GRANTS);
    // Undrained audit records are bounded too.
    assert!(drain(&mut ac).len() <= MAX_QUEUED_AUDIT);
    assert!(ac.dropped_audit() > 0);
    // Once they expire, room is made again.
    ac.handle_timeout(T0 + 10_000);
    assert_eq!(ac.grant_count(), 0);
    let v = ac.handle_request(T0 + 10_000, late, &names(&["feed"]), 10, catalog);
    assert!(matches!(v[0], RequestVerdict::Granted { .. }));
}

#[test]
fn grants_saved_before_a_restart_are_honoured_after_it() {
    let mut before = AccessControl::new(3600);
    let (p, q) = (peer(), peer());
    before.handle_request(T0, p, &names(&["feed"]), 600, catalog);
    before.handle_request(T0, q, &names(&["logs"]), 60, catalog);
    let saved = before.live_grants(T0 + 1);
    assert_eq!(saved.len(), 2);
    // Restarted 2 minutes later: q's 60 s grant is over, p's holds.
    let later = T0 + 120_000;
    let mut after = AccessControl::new(3600);
    assert_eq!(after.restore(later, &saved), 1);
    assert_eq!(
        after.check(later, &p, "feed").map(|a| a.until_ms),
        Ok(Some(T0 + 600_000))
    );
    assert_eq!(after.check(later, &q, "logs"), Err(Denial::NotAllowed));
    // A saved end beyond the cap (a tampered file) is held to the cap.
    let mut capped = AccessControl::new(60);
    let far = vec![(p, "feed".to_string(), u64::MAX)];
    assert_eq!(capped.restore(later, &far), 1);
    assert_eq!(capped.live_grants(later)[0].2, later + 60_000);
    // Restoring never shortens a grant held now.
    assert_eq!(capped.restore(later, &[(p, "feed".into(), later + 1)]), 0);
}

#[test]
fn one_sender_key_holds_at_most_64_grants_and_the_newest_win() {
    let mut ac = AccessControl::new(3600);
    let p = peer();
    let all: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    for (i, name) in all.iter().enumerate() {
        // Later requests end later.
        ac.handle_request(T0 + i as u64, p, std::slice::from_ref(name), 0, |_| true);
    }
    assert_eq!(ac.grant_count(), MAX_GRANTS_PER_PEER);
    assert!(ac.check(T0 + 100, &p, "s99").is_ok(), "the newest kept");
    assert!(ac.check(T0 + 100, &p, "s0").is_err(), "the oldest replaced");
    let replaced = drain(&mut ac)
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("grant_replaced"))
        .count();
    assert_eq!(replaced, 100 - MAX_GRANTS_PER_PEER);
}

#[test]
fn a_full_table_makes_room_from_strangers_never_from_acl_peers() {
    let mut ac = AccessControl::new(3600);
    let friend = peer();
    let acl = Acl {
        entries: vec![AclEntry {
            peer: PeerMatch::Peer(friend),
            streams: StreamMatch::Names(BTreeSet::from(["other".to_string()])),
            expires_ms: None,
        }],
    };
    ac.set_acl(T0, acl, "test");
    // The friend's grant ends first of all.
    ac.handle_request(T0, friend, &names(&["feed"]), 10, catalog);
    let streams: Vec<String> = (0..MAX_GRANTS_PER_PEER).map(|i| format!("s{i}")).collect();
    for _ in 0..(MAX_GRANTS / MAX_GRANTS_PER_PEER) {
        ac.handle_request(T0 + 1, peer(), &streams, 0, |_| true);
    }
    assert_eq!(ac.grant_count(), MAX_GRANTS);
    let newcomer = peer();
    let v = ac.handle_request(T0 + 2, newcomer, &names(&["feed"]), 0, catalog);
    assert!(matches!(v[0], RequestVerdict::Granted { .. }), "{v:?}");
    assert!(
        ac.check(T0 + 2, &friend, "feed").is_ok(),
        "the ACL peer's grant stays"
    );
    assert_eq!(ac.grant_count(), MAX_GRANTS);
}

#[test]
fn a_flood_of_refusals_is_summarised_and_names_are_cut() {
    let mut ac = AccessControl::new(3600);
    let p = peer();
    let long = "x".repeat(4096);
    for i in 0..1_000 {
        ac.refused(T0 + i, p, &long, RejectReason::NotAllowed);
    }
    let first = drain(&mut ac);
    assert_eq!(first.len(), REFUSALS_AUDITED_PER_MINUTE as usize);
    assert!(first
        .iter()
        .all(|r| r.stream.as_ref().unwrap().len() <= AUDIT_NAME_BYTES + 3));
    // The next minute: one summary of the rest.
    ac.refused(T0 + 61_000, p, "feed", RejectReason::NotAllowed);
    let next = drain(&mut ac);
    let summary = &next[0];
    assert_eq!(summary.reason.as_deref(), Some("refusals_summarised"));
    assert_eq!(
        summary.detail.as_deref(),
        Some("992 more refusals in the last minute")
    );
    assert_eq!(next.len(), 2, "and the new minute's first refusal");
}
