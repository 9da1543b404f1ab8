//! The audit log: one JSON line per OPEN served.
//!
//! Design decision: lines are formatted completely in memory and written with a
//! single `write` on an `O_APPEND` file under a mutex, so concurrent OPENs never
//! interleave and several agents may share one audit file. A failing audit write
//! is logged and never fails the OPEN it describes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// The client's pid from the kernel (`SO_PEERCRED`, in the agent's pid
    /// namespace); the declared one only when the kernel could not say.
    pub pid: u32,
    /// The pid the client declared, when it differs from `pid` (a client in
    /// another pid namespace, or one that lies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_pid: Option<u32>,
    /// The client's user id, from the kernel (`SO_PEERCRED`), so it cannot
    /// be forged; absent if the kernel did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub comm: String,
    pub path: String,
    pub key: String,
    pub bytes: u64,
    /// store | peer | cache | local (a real small file: PASS).
    pub source: String,
    /// For objects the agent serves: what verified them end to end
    /// (`crc64`, `sha256`, `md5-etag`, ...) or `unverified`. Absent for
    /// local files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
}

#[derive(Debug)]
pub struct AuditLog {
    file: Option<Mutex<File>>,
}

impl AuditLog {
    /// Opens (appends to) `path`; `None` disables auditing.
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(AuditLog { file })
    }

    pub fn record(&self, rec: &AuditRecord) {
        let Some(file) = &self.file else { return };
        let mut line = match serde_json::to_string(rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "audit record not serializable");
                return;
            }
        };
        line.push('\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "audit write failed");
        }
    }
}

/// Now, as RFC 3339 with second precision.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/audit.log");
        let log = AuditLog::open(Some(&p)).unwrap();
        let rec = AuditRecord {
            time: now_rfc3339(),
            pid: 1,
            declared_pid: None,
            uid: Some(1000),
            comm: "python3".into(),
            path: "a.bin".into(),
            key: "m/a.bin".into(),
            bytes: 3,
            source: "store".into(),
            verified_by: Some("unverified".into()),
        };
        log.record(&rec);
        log.record(&AuditRecord {
            source: "cache".into(),
            ..rec.clone()
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], rec);
        assert_eq!(lines[1].source, "cache");
        assert!(text.contains(r#""verified_by":"unverified""#), "{text}");
        assert!(chrono::DateTime::parse_from_rfc3339(&lines[0].time).is_ok());
    }
}
