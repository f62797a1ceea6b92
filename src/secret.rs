//! Files that hold secrets (a TLS key, a provider token) are refused when
//! other users can read them.

use std::path::Path;

/// Refuses a secret file (a key, a token) that other users can read: the
/// message says what to do about it.
pub fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {}", e.kind()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!("readable by other users (mode {mode:o}); chmod 600 it"));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
