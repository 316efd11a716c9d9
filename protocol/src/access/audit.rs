//! The records the access machine produces: one per decision, written by the
//! node to its append-only audit log and mirrored as JSON events.

use libp2p_identity::PeerId;

/// What was decided. The names are the audit log's `event` field: a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A grant was issued for a stream.
    Grant,
    /// An existing grant was extended by a later request.
    Renew,
    /// A request or a fetch was refused.
    Refuse,
    /// A stream started being served.
    ServeStart,
    /// A stream stopped being served (completed, cut off, or failed).
    ServeEnd,
    /// A grant ran out.
    Expire,
    /// A new ACL took effect.
    AclReload,
    /// An ACL file could not be used; the previous ACL stays in force.
    AclError,
}

impl AuditKind {
    /// The `event` name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Grant => "grant",
            AuditKind::Renew => "renew",
            AuditKind::Refuse => "refuse",
            AuditKind::ServeStart => "serve_start",
            AuditKind::ServeEnd => "serve_end",
            AuditKind::Expire => "expire",
            AuditKind::AclReload => "acl_reload",
            AuditKind::AclError => "acl_error",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, unix ms (the `now` the machine was given).
    pub ts_ms: u64,
    /// What.
    pub kind: AuditKind,
    /// The peer concerned.
    pub peer: Option<PeerId>,
    /// The stream concerned.
    pub stream: Option<String>,
    /// Machine-readable reason (`not_allowed`, `grant_expired`, `completed`, ...).
    pub reason: Option<String>,
    /// Bytes served (for `serve_end`).
    pub bytes: Option<u64>,
    /// Offset a stream was served from.
    pub offset: Option<u64>,
    /// Unix ms at which the grant concerned ends.
    pub expires_ms: Option<u64>,
    /// Human-readable detail (ACL errors, ACL sources).
    pub detail: Option<String>,
}

/// Bytes of a stream name kept in an audit record (a requested name can be
/// 4 KiB of a stranger's choosing).
pub const AUDIT_NAME_BYTES: usize = 64;

/// `name` cut to [`AUDIT_NAME_BYTES`] at a character boundary, marked `…`
/// when cut.
fn cut_name(name: &str) -> String {
    if name.len() <= AUDIT_NAME_BYTES {
        return name.to_string();
    }
    let mut end = AUDIT_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

impl AuditRecord {
    /// A record of `kind` at `ts_ms` with every optional field empty.
    pub fn new(ts_ms: u64, kind: AuditKind) -> Self {
        Self {
            ts_ms,
            kind,
            peer: None,
            stream: None,
            reason: None,
            bytes: None,
            offset: None,
            expires_ms: None,
            detail: None,
        }
    }

    /// Sets the peer and stream.
    pub fn about(mut self, peer: PeerId, stream: &str) -> Self {
        self.peer = Some(peer);
        self.stream = Some(cut_name(stream));
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }
}
