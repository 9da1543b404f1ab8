//! The directory that holds the agent's socket.
//!
//! Design decision: the agent only binds its socket in a directory that no other user can
//! write to, the same rule the preload library checks before it connects: owned by the agent's
//! user or root, and not writable by group or others unless sticky (like `/tmp`). A directory
//! the agent creates itself is private (0700), or 0755 when `OSS_CONNECTOR_SOCKET_MODE`
//! shares the socket with other users (they must be able to reach it). Otherwise a local user
//! who created `/tmp/oss-connector` first could replace the socket and serve their own bytes.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::Context;

/// Mode of a socket directory the agent creates for itself alone.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of a socket directory the agent creates for a shared socket.
pub const SHARED_DIR_MODE: u32 = 0o755;

/// Why a directory is not fit to hold the socket, or `None`.
pub fn refusal(mode: u32, owner: u32, me: u32) -> Option<String> {
    if owner != me && owner != 0 {
        return Some(format!(
            "it belongs to uid {owner}, not to uid {me} or root"
        ));
    }
    let writable = mode & 0o022 != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    (writable && !sticky).then(|| {
        format!(
            "it has mode {:o}: group or others could replace the socket",
            mode & 0o7777
        )
    })
}

/// Creates `dir` (and its parents) if needed, then checks it (see the module note).
pub fn prepare(dir: &Path, shared: bool) -> anyhow::Result<()> {
    let mode = if shared {
        SHARED_DIR_MODE
    } else {
        PRIVATE_DIR_MODE
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating socket directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("checking socket directory {}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("socket directory {} is not a directory", dir.display());
    }
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    let me = unsafe { libc::geteuid() };
    if let Some(why) = refusal(meta.mode(), meta.uid(), me) {
        anyhow::bail!(
            "refusing socket directory {}: {why}; remove it or set CONNECTOR_UDS_PATH to a directory of your own",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rules() {
        assert_eq!(refusal(0o40700, 1000, 1000), None);
        assert_eq!(refusal(0o40755, 0, 1000), None);
        assert_eq!(refusal(0o41777, 0, 1000), None, "sticky like /tmp");
        assert!(refusal(0o40700, 65534, 0).unwrap().contains("uid 65534"));
        assert!(refusal(0o40777, 1000, 1000).unwrap().contains("777"));
        assert!(refusal(0o40775, 0, 0).is_some());
    }

    #[test]
    fn created_private_or_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("a/run");
        prepare(&private, false).unwrap();
        assert_eq!(
            std::fs::metadata(&private).unwrap().mode() & 0o777,
            PRIVATE_DIR_MODE
        );
        let shared = tmp.path().join("shared");
        prepare(&shared, true).unwrap();
        assert_eq!(
            std::fs::metadata(&shared).unwrap().mode() & 0o777,
            SHARED_DIR_MODE
        );
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&open, false).unwrap_err().to_string();
        assert!(e.contains("refusing socket directory"), "{e}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("!!! SKIPPED: giving a directory to another user needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let squatted = tmp.path().join("oss-connector");
        std::fs::create_dir(&squatted).unwrap();
        std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
        let e = prepare(&squatted, false).unwrap_err().to_string();
        assert!(e.contains("uid 65534"), "{e}");
    }
}
