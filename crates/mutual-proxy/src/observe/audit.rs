//! The audit log: one JSON object per connection per line, with the fields DESIGN.md fixes, so a
//! SIEM can parse it without knowing anything else about mutual. Lines are handed to a dedicated
//! writer thread so a slow disk never stalls a TLS worker until the bounded queue is full (then
//! workers wait: losing audit lines silently would be worse than slowing down).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};

use mutual_policy::Identity;
use mutual_tls::TlsFacts;
use serde::Serialize;

use crate::ProxyError;

/// `allowed` | `denied` | `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// The peer identity as the audit log shows it (a subset of [`Identity`], fixed by DESIGN.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditIdentity {
    pub spiffe: Option<String>,
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub cn: Option<String>,
    pub serial: String,
    pub sha256: String,
    pub issuer: String,
}

impl From<&Identity> for AuditIdentity {
    fn from(id: &Identity) -> Self {
        AuditIdentity {
            spiffe: id.spiffe.clone(),
            dns: id.dns.clone(),
            ip: id.ip.clone(),
            cn: id.cn.clone(),
            serial: id.serial.clone(),
            sha256: id.sha256.clone(),
            issuer: id.issuer.clone(),
        }
    }
}

/// One audit line.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub listener: String,
    pub peer_addr: String,
    pub result: Outcome,
    pub reason: &'static str,
    pub identity: Option<AuditIdentity>,
    /// What was negotiated (`version`, `cipher`, `group`), as [`TlsFacts`] spells it.
    pub tls: Option<&'a TlsFacts>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    /// HTTP mode: the request this line is about (`method`, `path`, `status` at the top level
    /// of the line); absent for connection lines.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFields>,
}

/// The per-request fields of an HTTP-mode audit line. The path is logged without its query
/// string, which may carry tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpFields {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// `2026-05-01T12:34:56.789Z`.
pub fn rfc3339_ms(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

enum Sink {
    Stdout,
    File(PathBuf),
}

enum Msg {
    Line(String),
    /// Acknowledged once everything queued before it is written and flushed.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where audit lines go. `Audit::disabled()` drops them (no `--audit-log`).
pub struct Audit {
    tx: Option<SyncSender<Msg>>,
}

/// Lines queued before producers wait for the writer.
const QUEUE: usize = 16 * 1024;

/// How long the writer lets lines gather after the first of a burst (the most a line waits
/// before it is written, on top of the write itself).
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

impl Audit {
    /// No audit log.
    pub fn disabled() -> Audit {
        Audit { tx: None }
    }

    /// `-` is stdout; anything else a file opened for appending (created 0640 if missing).
    pub fn open(spec: &str) -> Result<Audit, ProxyError> {
        let sink = if spec == "-" {
            Sink::Stdout
        } else {
            Sink::File(PathBuf::from(spec))
        };
        // Buffered: a burst of lines becomes one write(2) at the flush below, not one per line.
        let mut out: std::io::BufWriter<Box<dyn Write + Send>> = std::io::BufWriter::with_capacity(
            64 * 1024,
            match &sink {
                Sink::Stdout => Box::new(std::io::stdout()),
                Sink::File(p) => Box::new(open_append(p)?),
            },
        );
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("mutual-audit".into())
            .spawn(move || {
                // Write every queued line, flush when the queue is momentarily empty: one
                // syscall per burst instead of per line, and nothing waits long in a buffer.
                // After the first line of a burst the writer waits BATCH_WINDOW before it
                // drains: lines queued meanwhile cost their producer no wake-up and share one
                // write (issue 20: one wake-up and one write per connection were most of the
                // audit log's cost per handshake). A flush request is answered at once.
                let mut acks = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut ok = true;
                    if matches!(first, Msg::Line(_)) {
                        std::thread::sleep(BATCH_WINDOW);
                    }
                    let mut next = Some(first);
                    while let Some(msg) = next {
                        match msg {
                            Msg::Line(l) => ok &= out.write_all(l.as_bytes()).is_ok(),
                            Msg::Flush(ack) => acks.push(ack),
                        }
                        next = rx.try_recv().ok();
                    }
                    ok &= out.flush().is_ok();
                    if !ok {
                        tracing::error!(target: "mutual::audit", "cannot write the audit log");
                    }
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                }
            })
            .map_err(|source| ProxyError::Audit {
                path: PathBuf::from(spec),
                source,
            })?;
        Ok(Audit { tx: Some(tx) })
    }

    /// Queues one record (a no-op when disabled).
    pub fn log(&self, rec: &AuditRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        match serde_json::to_string(rec) {
            Ok(mut line) => {
                line.push('\n');
                if tx.send(Msg::Line(line)).is_err() {
                    tracing::error!(target: "mutual::audit", "audit writer has stopped");
                }
            }
            Err(e) => tracing::error!(target: "mutual::audit", "cannot encode audit record: {e}"),
        }
    }

    /// Waits (up to `timeout`) until every line queued so far is written: call before exiting.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }
}

fn open_append(p: &Path) -> Result<std::fs::File, ProxyError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(p)
        .map_err(|source| ProxyError::Audit {
            path: p.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn timestamp_is_rfc3339_utc_millis() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.089 +02:00);
        assert_eq!(rfc3339_ms(t), "2026-03-04T03:06:07.089Z");
    }

    #[test]
    fn record_has_exactly_the_design_fields() {
        let rec = AuditRecord {
            ts: "2026-01-01T00:00:00.000Z".into(),
            listener: "serve".into(),
            peer_addr: "127.0.0.1:5555".into(),
            result: Outcome::Denied,
            reason: mutual_tls::Reason::PolicyDenied.label(),
            identity: Some(AuditIdentity {
                spiffe: Some("spiffe://example.org/a".into()),
                dns: vec!["a.example".into()],
                ip: vec![],
                cn: Some("a".into()),
                serial: "01ab".into(),
                sha256: "ff".into(),
                issuer: "CN=Issuer".into(),
            }),
            tls: Some(&TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                group: "X25519MLKEM768".into(),
                resumed: false,
            }),
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: 3,
            http: None,
        };
        let v: serde_json::Value = serde_json::to_value(&rec).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytes_in",
                "bytes_out",
                "duration_ms",
                "identity",
                "listener",
                "peer_addr",
                "reason",
                "result",
                "tls",
                "ts"
            ]
        );
        assert_eq!(v["result"], "denied");
        assert_eq!(v["reason"], "policy_denied");
        let mut idk: Vec<_> = v["identity"].as_object().unwrap().keys().cloned().collect();
        idk.sort();
        assert_eq!(
            idk,
            ["cn", "dns", "ip", "issuer", "serial", "sha256", "spiffe"]
        );
        let mut tk: Vec<_> = v["tls"].as_object().unwrap().keys().cloned().collect();
        tk.sort();
        assert_eq!(tk, ["cipher", "group", "version"]);
    }

    /// A line with only these fields set.
    fn bare(listener: &str, result: Outcome, reason: &'static str) -> AuditRecord<'static> {
        AuditRecord {
            ts: String::new(),
            listener: listener.into(),
            peer_addr: String::new(),
            result,
            reason,
            identity: None,
            tls: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0,
            http: None,
        }
    }

    #[test]
    fn failed_before_handshake_has_null_identity_and_tls() {
        let rec = AuditRecord {
            peer_addr: "p".into(),
            ..bare("l", Outcome::Failed, "malformed")
        };
        let v = serde_json::to_value(&rec).unwrap();
        assert!(v["identity"].is_null());
        assert!(v["tls"].is_null());
    }

    #[test]
    fn file_sink_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let a = Audit::open(p.to_str().unwrap()).unwrap();
        for i in 0..3 {
            a.log(&bare(&format!("l{i}"), Outcome::Allowed, "ok"));
        }
        a.flush(std::time::Duration::from_secs(5));
        let lines: Vec<String> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 3);
        let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(v["listener"], "l2");
    }
}
