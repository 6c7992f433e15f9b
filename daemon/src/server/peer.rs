//! Who is on the other end of the socket (SO_PEERCRED) and whether the
//! trusted-users list trusts them. The store is read-only either way; trust
//! only changes what the handshake reports and which errors Nix prints.
//!
//! Invariant: the NSS look-ups (getpwuid_r, getgrouplist, getgrnam_r) may
//! block on a network directory, so they only run through
//! `crate::blocking::run`, never on an async thread.

// The reentrant NSS look-ups have no safe wrapper in std or rustix.
#![allow(unsafe_code)]

use std::ffi::CStr;

#[derive(Clone, Copy, Debug, Default)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

fn user_name_and_groups(uid: u32, gid: u32) -> Option<(String, Vec<u32>)> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: `passwd` is plain C data for which all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid for the sizes given; result checked below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string in `buf`,
    // which outlives `name_c`.
    let name_c = unsafe { CStr::from_ptr(pwd.pw_name) };
    let name = name_c.to_string_lossy().into_owned();
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many.
    let rc = unsafe { libc::getgrouplist(name_c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    groups.truncate(if rc < 0 { 0 } else { n as usize });
    groups.push(gid);
    Some((name, groups))
}

/// The gid of group `name` (NSS: files, LDAP, …), or `None` when there is
/// no such group. Reentrant (`getgrnam_r`, its buffer grown while the group
/// does not fit): the one group look-up of the crate, used by the trusted
/// users check and `--socket-group`. Blocking.
pub fn group_gid(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    loop {
        // SAFETY: a zeroed `group` is a valid out-parameter (plain integers
        // and null pointers).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated; `buf` holds `buf.len()` bytes
        // that getgrnam_r may point `grp`'s strings into; `res` is set to
        // `&grp` or null.
        let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
        if rc == libc::ERANGE && buf.len() < 1 << 24 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || res.is_null() {
            return None;
        }
        return Some(grp.gr_gid);
    }
}

/// Nix's trusted-users semantics: user names, `@group`, and `*` for everyone.
/// The user and group look-ups (NSS: files, LDAP, …) run through
/// `crate::blocking::run`; `*` and an empty list need none.
pub async fn is_trusted(peer: &Peer, trusted_users: &[String]) -> bool {
    if trusted_users.iter().any(|u| u == "*") {
        return true;
    }
    let (Some(uid), Some(gid)) = (peer.uid, peer.gid) else {
        return false;
    };
    if trusted_users.is_empty() {
        return false;
    }
    let trusted_users = trusted_users.to_vec();
    crate::blocking::run(move || trusted_by_name(uid, gid, &trusted_users)).await
}

/// Blocking part of [`is_trusted`]: is user `uid` (primary group `gid`) named
/// in `trusted_users`, or in a `@group` listed there?
fn trusted_by_name(uid: u32, gid: u32, trusted_users: &[String]) -> bool {
    let Some((name, groups)) = user_name_and_groups(uid, gid) else {
        return false;
    };
    trusted_users.iter().any(|entry| match entry.strip_prefix('@') {
        Some(group) => group_gid(group).is_some_and(|g| groups.contains(&g)),
        None => *entry == name,
    })
}

#[cfg(test)]
mod tests {
    use super::{group_gid, is_trusted, Peer};

    /// The one group look-up: a group every system has, one none has, and
    /// a name that cannot be a C string.
    #[test]
    fn group_gid_finds_root_and_nothing_else() {
        assert_eq!(group_gid("root"), Some(0));
        assert_eq!(group_gid("no-group-by-that-name"), None);
        assert_eq!(group_gid("ro\0ot"), None);
    }

    fn root() -> Peer {
        Peer {
            pid: None,
            uid: Some(0),
            gid: Some(0),
        }
    }

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn names_groups_and_star() {
        assert!(is_trusted(&Peer::default(), &list(&["*"])).await);
        assert!(!is_trusted(&Peer::default(), &list(&["root"])).await);
        assert!(is_trusted(&root(), &list(&["nobody-by-that-name", "root"])).await);
        assert!(is_trusted(&root(), &list(&["@root"])).await);
        assert!(!is_trusted(&root(), &list(&["nobody-by-that-name", "@no-group-by-that-name"])).await);
        assert!(!is_trusted(&root(), &[]).await);
    }
}
