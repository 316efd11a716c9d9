//! Access on a provider: the grant and ACL machine of
//! `ledgermesh_protocol::access` behind a lock, its audit records written to
//! the audit log and mirrored as JSON events, grants expired on time, and the
//! ACL file reloaded when it changes.

pub mod acl_file;
pub mod audit_log;
pub mod grant_log;

use crate::clock::now_ms;
use crate::events::{Emitter, Event};
use audit_log::{AuditLine, AuditLog};
use ledgermesh_protocol::access::{AccessControl, Acl, AuditKind, AuditRecord, Denial};
use libp2p::PeerId;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often the ACL file is checked for changes.
pub const ACL_POLL: Duration = Duration::from_secs(1);

struct Inner {
    machine: Mutex<AccessControl>,
    /// Bumped on every change; stream watchers re-check on it.
    changed: watch::Sender<u64>,
    /// Wakes the expiry task when a new deadline may be earlier.
    wake_expiry: Arc<Notify>,
    audit: Option<AuditLog>,
    emitter: Emitter,
    /// The expiry task and the ACL file's watcher: they end with this.
    tasks: crate::tasks::StopOnDrop,
}

/// A provider's access state; clones share it.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Grants capped at `max_grant_secs`, an empty ACL, records to `audit`
    /// (when given) and to `emitter`. Starts the expiry task.
    pub fn new(max_grant_secs: u64, audit: Option<AuditLog>, emitter: Emitter) -> Self {
        let access = Self {
            inner: Arc::new(Inner {
                machine: Mutex::new(AccessControl::new(max_grant_secs)),
                changed: watch::channel(0).0,
                wake_expiry: Arc::new(Notify::new()),
                audit,
                emitter,
                tasks: Default::default(),
            }),
        };
        let weak = Arc::downgrade(&access.inner);
        access.inner.tasks.spawn(expire_grants(weak));
        access
    }

    /// Everyone may fetch everything (benchmarks, open data).
    pub fn open(emitter: Emitter) -> Self {
        let a = Self::new(
            ledgermesh_protocol::access::DEFAULT_MAX_GRANT_SECS,
            None,
            emitter,
        );
        a.update(|m, now| m.set_acl(now, Acl::open(), "open access"));
        a
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AccessControl> {
        self.inner.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the machine at the current time, then writes and emits
    /// the records it left and wakes whoever waits on access changes. For
    /// changes to grants or the ACL; see [`Access::record`] for the rest.
    pub fn update<R>(&self, f: impl FnOnce(&mut AccessControl, u64) -> R) -> R {
        let r = self.apply(f);
        self.inner.changed.send_modify(|g| *g += 1);
        self.inner.wake_expiry.notify_one();
        r
    }

    /// Like [`Access::update`] for calls that only read access and leave
    /// audit records (stream decisions, serve ends): nobody is woken, so a
    /// busy provider does not make every stream watcher re-check.
    pub fn record<R>(&self, f: impl FnOnce(&mut AccessControl, u64) -> R) -> R {
        self.apply(f)
    }

    fn apply<R>(&self, f: impl FnOnce(&mut AccessControl, u64) -> R) -> R {
        let (r, records) = {
            let mut m = self.lock();
            let r = f(&mut m, now_ms());
            let records: Vec<AuditRecord> = std::iter::from_fn(|| m.poll_audit()).collect();
            (r, records)
        };
        for rec in records {
            self.publish(&rec);
        }
        r
    }

    fn publish(&self, rec: &AuditRecord) {
        let node = self.inner.emitter.node().to_string();
        if let Some(log) = &self.inner.audit {
            if let Err(e) = log.append(&AuditLine::of(rec, &node)) {
                tracing::warn!(error = %e, "audit log write failed");
                self.inner
                    .emitter
                    .emit(Event::error(crate::events::ErrorPart::Audit, e));
            }
        }
        if let Some(ev) = event_of(rec) {
            self.inner.emitter.emit(ev);
        }
    }

    /// Resolves when `peer` may no longer fetch `stream` (its grant ran out,
    /// or the ACL that allowed it changed), with the reason.
    pub async fn until_denied(&self, peer: PeerId, stream: &str) -> Denial {
        let mut rx = self.inner.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let now = now_ms();
            let verdict = self.lock().check(now, &peer, stream);
            let until = match verdict {
                Err(d) => return d,
                Ok(a) => a.until_ms,
            };
            let wait = async {
                match until {
                    Some(u) => {
                        tokio::time::sleep(Duration::from_millis(u.saturating_sub(now) + 1)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait => {}
                r = rx.changed() => if r.is_err() { std::future::pending::<()>().await },
            }
        }
    }

    /// The peers this provider deals with (live grants, ACL peers; `true`:
    /// the ACL lets everyone fetch), and a watch that wakes when they may
    /// have changed.
    pub fn dealing_with(&self) -> ((bool, Vec<PeerId>), watch::Receiver<u64>) {
        let rx = self.inner.changed.subscribe();
        (self.lock().dealing_with(now_ms()), rx)
    }

    /// Loads the ACL file at startup; an error is returned (a provider does
    /// not start on a bad ACL).
    pub fn load_acl_file(&self, path: &std::path::Path) -> Result<(), acl_file::AclFileError> {
        let acl = acl_file::load(path)?;
        let source = path.display().to_string();
        self.update(|m, now| m.set_acl(now, acl, &source));
        Ok(())
    }

    /// Re-reads `path` whenever it changes (checked every [`ACL_POLL`]) or
    /// the process gets SIGHUP, until the access state is dropped. A bad file
    /// is reported and the ACL in force stays.
    pub fn watch_acl_file(&self, path: PathBuf) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.tasks.spawn(async move {
            let mut seen = acl_file::fingerprint(&path);
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let forced = tokio::select! {
                    _ = tokio::time::sleep(ACL_POLL) => false,
                    _ = hangup => true,
                };
                let Some(inner) = weak.upgrade() else { return };
                let access = Access { inner };
                let now = acl_file::fingerprint(&path);
                if !forced && now == seen {
                    continue;
                }
                seen = now;
                match acl_file::load(&path) {
                    Ok(acl) => {
                        tracing::info!(path = %path.display(), entries = acl.entries.len(), "ACL reloaded");
                        let source = path.display().to_string();
                        access.update(|m, now| m.set_acl(now, acl, &source));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ACL file rejected; the previous ACL stays in force");
                        let detail = e.to_string();
                        access.update(|m, now| m.acl_rejected(now, &detail));
                    }
                }
            }
        });
    }
}

/// The JSON event mirroring an audit record, where there is one.
fn event_of(rec: &AuditRecord) -> Option<Event> {
    let peer_id = rec.peer.map(|p| p.to_string()).unwrap_or_default();
    let stream = rec.stream.clone().unwrap_or_default();
    Some(match rec.kind {
        AuditKind::Grant | AuditKind::Renew => Event::Grant {
            peer_id,
            stream,
            expires_ms: rec.expires_ms.unwrap_or(0),
            renewed: rec.kind == AuditKind::Renew,
        },
        AuditKind::Refuse => Event::AccessRefused {
            peer_id,
            stream,
            reason: rec.reason.clone().unwrap_or_default(),
        },
        AuditKind::Expire => Event::GrantExpired {
            peer_id,
            stream,
            offset: None,
            path: None,
        },
        AuditKind::AclReload => Event::AclReloaded {
            detail: rec.detail.clone().unwrap_or_default(),
        },
        AuditKind::AclError => Event::Error {
            what: crate::events::ErrorPart::Acl,
            detail: format!(
                "{}; the previous ACL stays in force",
                rec.detail.as_deref().unwrap_or("invalid ACL")
            ),
            reason: Some("invalid_acl"),
            peer_id: None,
        },
        AuditKind::ServeStart | AuditKind::ServeEnd => return None,
    })
}

/// Expires grants on time (so `expire` is audited when it happens, not when
/// someone next asks), until the access state is dropped.
async fn expire_grants(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let access = Access { inner };
        let (expired, next) = access.apply(|m, now| {
            let before = m.grant_count();
            m.handle_timeout(now);
            let next = m.poll_timeout(now).map(|t| t.saturating_sub(now));
            (m.grant_count() < before, next)
        });
        if expired {
            // Grants that expired are gone: wake stream watchers.
            access.inner.changed.send_modify(|g| *g += 1);
        }
        let wait = Duration::from_millis(next.unwrap_or(60_000).clamp(1, 60_000));
        let wake = access.inner.wake_expiry.clone();
        drop(access);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}
