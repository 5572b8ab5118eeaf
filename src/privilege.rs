//! Least privilege: once every input, output and socket is open, the whole process (every
//! thread: glibc's `setuid` applies to all of them) optionally chroots to the root directory
//! and drops to an unprivileged user.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory the process chrooted to, if it did.
static CHROOT: OnceLock<PathBuf> = OnceLock::new();

/// The user the process will drop to (set at startup): helpers it starts before the drop,
/// such as the managed `redis-server`, run as that user from the start.
static TARGET: OnceLock<UserIds> = OnceLock::new();

/// Records the user the process will drop to.
pub(crate) fn set_target(u: UserIds) {
    let _ = TARGET.set(u);
}

/// The user a helper process should run as: the target user while this process is still
/// root, else none (it already runs as that user, or no drop was asked).
pub(crate) fn helper_user() -> Option<UserIds> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    TARGET.get().copied().filter(|_| root)
}

/// Gives a regular file of root's, made by this process before the privilege drop, to the
/// user it drops to: after the drop that user writes on in it (a reload's new pipeline, a
/// Parquet index appended to, the next run). Nothing once dropped, or when no drop was asked;
/// devices and other owners' files are left as they are, and a file system that cannot change
/// owners changes nothing.
pub(crate) fn give_to_target(f: &std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    if let Some(u) = helper_user()
        && f.metadata().is_ok_and(|m| m.is_file() && m.uid() == 0)
    {
        let _ = std::os::unix::fs::fchown(f, Some(u.uid), Some(u.gid));
    }
}

/// Whether the process has chrooted (`-c`).
pub(crate) fn chrooted() -> bool {
    CHROOT.get().is_some()
}

/// Where a path configured before the chroot is now: paths under the new root lose that
/// prefix; others are unchanged (and are unreachable: see docs/operations.md).
pub(crate) fn host_path(p: &Path) -> std::borrow::Cow<'_, Path> {
    match CHROOT.get().and_then(|root| p.strip_prefix(root).ok()) {
        Some(rest) => std::borrow::Cow::Owned(Path::new("/").join(rest)),
        None => std::borrow::Cow::Borrowed(p),
    }
}

/// A user's ids, looked up before any chroot (the password database lives outside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UserIds {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Why privileges could not be handed over or dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrivilegeError {
    #[error("user {0:?}: not a valid name")]
    BadName(String),
    #[error("user {0:?}: no such user")]
    NoSuchUser(String),
    #[error("chown {}: {source}", path.display())]
    Chown { path: PathBuf, source: std::io::Error },
    #[error("chroot: bad path")]
    BadRoot,
    #[error("{what}: {source}")]
    Call { what: String, source: std::io::Error },
    #[error("privileges were not dropped (root could be regained)")]
    RootRegainable,
}

/// Looks a user up by name (or numeric id).
pub(crate) fn lookup(name: &str) -> Result<UserIds, PrivilegeError> {
    let cname = CString::new(name).map_err(|_| PrivilegeError::BadName(name.to_string()))?;
    let mut pw: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `pw` and `buf` outlive it, `res` receives a
    // pointer to `pw` or null.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc == 0 && !res.is_null() {
        return Ok(UserIds {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        });
    }
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return Ok(UserIds { uid, gid: uid });
    }
    Err(PrivilegeError::NoSuchUser(name.to_string()))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: `passwd` is a plain C struct of integers and pointers, for which all-zero bytes
    // are a valid value (null pointers); getpwnam_r fills it.
    unsafe { std::mem::zeroed() }
}

/// Gives the engine's own run directory to `user`, with what is in it (checkpoints, the
/// managed Redis directory and socket), so that checkpoints can still be saved and Redis
/// reached after the drop.
pub(crate) fn hand_over(dir: &Path, user: UserIds) -> Result<(), PrivilegeError> {
    fn walk(p: &Path, user: UserIds, depth: u32) -> Result<(), PrivilegeError> {
        std::os::unix::fs::lchown(p, Some(user.uid), Some(user.gid)).map_err(|source| PrivilegeError::Chown {
            path: p.to_path_buf(),
            source,
        })?;
        if depth < 2
            && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
            && let Ok(rd) = std::fs::read_dir(p)
        {
            for e in rd.flatten() {
                walk(&e.path(), user, depth + 1)?;
            }
        }
        Ok(())
    }
    walk(dir, user, 0)
}

fn os_err(what: impl Into<String>) -> PrivilegeError {
    PrivilegeError::Call {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// Chroots to `root` (when given), then drops to `user` (when given): supplementary groups
/// cleared, then the group, then the user. Checks that the user cannot be regained.
pub(crate) fn drop_privileges(user: Option<UserIds>, root: Option<&Path>) -> Result<(), PrivilegeError> {
    if let Some(root) = root {
        let c = CString::new(root.as_os_str().as_encoded_bytes()).map_err(|_| PrivilegeError::BadRoot)?;
        // SAFETY: `c` is a NUL-terminated path.
        if unsafe { libc::chroot(c.as_ptr()) } != 0 {
            return Err(os_err(format!("chroot {}", root.display())));
        }
        std::env::set_current_dir("/").map_err(|source| PrivilegeError::Call {
            what: "chdir / after chroot".into(),
            source,
        })?;
        let _ = CHROOT.set(root.to_path_buf());
    }
    let Some(u) = user else { return Ok(()) };
    // SAFETY: plain system calls on integer arguments; a null list with size 0 clears the
    // supplementary groups.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os_err("setgroups"));
        }
        if libc::setgid(u.gid) != 0 {
            return Err(os_err(format!("setgid {}", u.gid)));
        }
        if libc::setuid(u.uid) != 0 {
            return Err(os_err(format!("setuid {}", u.uid)));
        }
        if u.uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() != u.uid || libc::getegid() != u.gid) {
            return Err(PrivilegeError::RootRegainable);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_rejects_unknown_users() {
        assert_eq!(lookup("root").unwrap(), UserIds { uid: 0, gid: 0 });
        assert!(matches!(lookup("no-such-user-dfm"), Err(PrivilegeError::NoSuchUser(_))));
        assert!(
            lookup("no-such-user-dfm")
                .unwrap_err()
                .to_string()
                .contains("no such user")
        );
        assert_eq!(lookup("4242").unwrap(), UserIds { uid: 4242, gid: 4242 });
    }
}
