//! Workload attestation by Unix peer credentials: the kernel tells who is on the other end of
//! the socket (SO_PEERCRED: pid, uid, gid, fixed at connect time, not forgeable by the caller),
//! and `/proc/PID/exe` names its executable, which is hashed. This is what SPIRE's `unix`
//! workload attestor does. A pid can be reused after the caller exits; the window is the time
//! between connect and the read of `/proc`, and the uid still has to match (docs/agent.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::selector::Caller;

/// Attests the caller whose credentials the socket reported.
pub fn caller(pid: Option<i32>, uid: u32, gid: u32) -> Caller {
    let (exe, sha256) = match pid.filter(|p| *p > 0) {
        Some(p) => {
            let link = PathBuf::from(format!("/proc/{p}/exe"));
            // Hash through the /proc link, not the path: it is the file the process runs even if
            // the path was replaced since.
            (std::fs::read_link(&link).ok(), sha256_file(&link).ok())
        }
        None => (None, None),
    };
    Caller {
        pid,
        uid,
        gid,
        exe,
        sha256,
    }
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn this_process_is_attested_with_its_own_binary() {
        let me = std::process::id() as i32;
        let c = caller(Some(me), 7, 8);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(c.exe.as_deref(), Some(exe.as_path()));
        assert_eq!(c.sha256, Some(sha256_file(&exe).unwrap()));
        assert_eq!((c.uid, c.gid, c.pid), (7, 8, Some(me)));
        // No pid: no executable, so path and hash selectors cannot match.
        let blind = caller(None, 7, 8);
        assert_eq!((blind.exe, blind.sha256), (None, None));
    }
}
