//! Who may use the control socket: a decision from the peer's credentials.
//!
//! The socket file's mode is the first gate (0600 root, or 0660 with the read group); this is the
//! second, so a mistake in one doesn't open the other. The decision itself is [`permission`], a
//! pure function; [`PeerCreds::of`] gathers its inputs from a connected socket and fails closed.

use std::{io, os::fd::AsRawFd};

use tokio::net::UnixStream;

/// The server's access policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// Members of this group (primary or supplementary) may read (`GET`) but not change anything.
    /// `None`: only root (and the daemon's own uid) may connect.
    pub read_group: Option<u32>,
}

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Nothing: every request gets 403.
    None,
    /// `GET` (and `HEAD`) only.
    Read,
    /// Everything.
    ReadWrite,
}

impl Perm {
    /// True if this permission allows a request with this method.
    pub fn allows(self, method: &hyper::Method) -> bool {
        match self {
            Perm::None => false,
            Perm::Read => method == hyper::Method::GET || method == hyper::Method::HEAD,
            Perm::ReadWrite => true,
        }
    }
}

/// The access decision: root and `server_uid` (the daemon's own effective uid) read and write;
/// a peer whose effective gid or supplementary groups include `read_group` reads; anyone else
/// gets nothing.
pub fn permission(
    uid: u32,
    gid: u32,
    groups: &[u32],
    read_group: Option<u32>,
    server_uid: u32,
) -> Perm {
    if uid == 0 || uid == server_uid {
        return Perm::ReadWrite;
    }
    match read_group {
        Some(g) if gid == g || groups.contains(&g) => Perm::Read,
        _ => Perm::None,
    }
}

/// A peer's credentials, as the kernel recorded them when it connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCreds {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, if the kernel gave one.
    pub pid: Option<i32>,
    /// Supplementary groups; empty if they could not be read (fail closed: no group access).
    pub groups: Vec<u32>,
}

impl PeerCreds {
    /// Reads the peer's credentials from a connected socket (`SO_PEERCRED`) and its supplementary
    /// groups (`SO_PEERGROUPS`, Linux 4.13; falling back to `/proc/<pid>/status`). Returns an
    /// error only if the uid itself is unknown.
    pub fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let groups = match peer_groups(stream) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!("SO_PEERGROUPS failed ({e}); reading /proc");
                pid.and_then(|p| proc_groups(p, uid, gid))
                    .unwrap_or_default()
            }
        };
        Ok(PeerCreds {
            uid,
            gid,
            pid,
            groups,
        })
    }
}

/// Supplementary groups of the peer at connect time (`SO_PEERGROUPS`): race-free, unlike
/// `/proc/<pid>`, whose pid may have been reused.
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    let fd = stream.as_raw_fd();
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` is a valid, writable buffer of `len` bytes and `fd` is an open socket
        // borrowed from `stream` for the duration of the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / size_of::<u32>());
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: the buffer was too small; `len` now holds the size needed.
        let needed = len as usize / size_of::<u32>();
        if e.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 1 << 16 {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// Supplementary groups from `/proc/<pid>/status`, only if that process still has the peer's
/// effective uid and gid (a reused pid must not lend its groups). `None` on any doubt.
fn proc_groups(pid: i32, uid: u32, gid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_proc_groups(&status, uid, gid)
}

/// The `Groups:` line of a `/proc/<pid>/status` text, checked against the effective uid and gid.
pub(crate) fn parse_proc_groups(status: &str, uid: u32, gid: u32) -> Option<Vec<u32>> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let effective = |line: &str| line.split_whitespace().nth(1)?.parse::<u32>().ok();
    if effective(field("Uid:")?)? != uid || effective(field("Gid:")?)? != gid {
        return None;
    }
    field("Groups:")?
        .split_whitespace()
        .map(|g| g.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_self_read_write() {
        assert_eq!(permission(0, 0, &[], None, 0), Perm::ReadWrite);
        assert_eq!(permission(0, 100, &[], Some(5), 0), Perm::ReadWrite);
        assert_eq!(permission(1000, 1000, &[], None, 1000), Perm::ReadWrite);
    }

    #[test]
    fn read_group_by_primary_or_supplementary_gid() {
        assert_eq!(permission(1000, 5, &[], Some(5), 0), Perm::Read);
        assert_eq!(permission(1000, 1000, &[4, 5], Some(5), 0), Perm::Read);
        assert_eq!(permission(1000, 1000, &[4, 6], Some(5), 0), Perm::None);
        assert_eq!(permission(1000, 5, &[5], None, 0), Perm::None);
        assert_eq!(permission(65534, 65534, &[], Some(0), 0), Perm::None);
    }

    #[test]
    fn methods() {
        use hyper::Method;
        assert!(Perm::Read.allows(&Method::GET));
        assert!(Perm::Read.allows(&Method::HEAD));
        assert!(!Perm::Read.allows(&Method::POST));
        assert!(!Perm::Read.allows(&Method::PUT));
        assert!(!Perm::None.allows(&Method::GET));
        assert!(Perm::ReadWrite.allows(&Method::DELETE));
    }

    #[tokio::test]
    async fn own_credentials_over_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = PeerCreds::of(&a).unwrap();
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
        assert_eq!(c.pid, Some(std::process::id() as i32));
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer_groups(&a).unwrap();
        mine.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, mine);
        let mut from_proc = proc_groups(c.pid.unwrap(), c.uid, c.gid).unwrap();
        from_proc.sort_unstable();
        assert_eq!(from_proc, mine);
    }

    #[test]
    fn proc_status_groups() {
        let s = "Name:\tcat\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t101\t101\t101\n\
                 FDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t1\n";
        assert_eq!(parse_proc_groups(s, 1001, 101), Some(vec![4, 24, 27]));
        // A different effective uid or gid (pid reused): no groups.
        assert_eq!(parse_proc_groups(s, 1000, 101), None);
        assert_eq!(parse_proc_groups(s, 1001, 100), None);
        let empty = "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n";
        assert_eq!(parse_proc_groups(empty, 1, 1), Some(vec![]));
        assert_eq!(parse_proc_groups("Uid:\t1\t1\t1\t1\n", 1, 1), None);
        let junk = "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t1 x\n";
        assert_eq!(parse_proc_groups(junk, 1, 1), None);
    }
}
