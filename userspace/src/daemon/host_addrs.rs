//! The host's own addresses, always current: a rule must never cover an address on one of the
//! host's interfaces, including one added after the daemon started.
//!
//! A netlink socket subscribed to the kernel's address notifications (`RTNLGRP_IPV4_IFADDR`,
//! `RTNLGRP_IPV6_IFADDR`) tells when the set changed; the set itself is then re-read whole
//! (`getifaddrs`), so nothing depends on parsing each notification or on their order, and a
//! lost notification (`ENOBUFS` on overflow) costs only a re-read. The socket is drained when
//! the guards are built, not by a thread: the kernel queues the notification before the
//! `ip addr add` that caused it returns, so a rule checked after that already sees the address.

use std::{io, net::IpAddr, sync::Mutex};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Errors from following the host's addresses.
#[derive(Debug, thiserror::Error)]
pub enum HostAddrsError {
    /// The netlink socket could not be opened or subscribed.
    #[error("subscribing to the kernel's address notifications (netlink route socket): {0}")]
    Subscribe(#[source] io::Error),
    /// The addresses could not be listed.
    #[error("listing the host's addresses (getifaddrs): {0}")]
    List(#[source] nix::Error),
}

/// The addresses on the host's interfaces (in the daemon's network namespace).
pub struct HostAddrs {
    sock: Socket,
    addrs: Mutex<Vec<IpAddr>>,
}

impl std::fmt::Debug for HostAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAddrs")
            .field(
                "addrs",
                &*self.addrs.lock().unwrap_or_else(|p| p.into_inner()),
            )
            .finish()
    }
}

impl HostAddrs {
    /// Subscribes to address changes, then lists the addresses (in that order, so a change in
    /// between is not missed).
    pub fn open() -> Result<Self, HostAddrsError> {
        let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(HostAddrsError::Subscribe)?;
        sock.bind(&SocketAddr::new(0, groups))
            .map_err(HostAddrsError::Subscribe)?;
        sock.set_non_blocking(true)
            .map_err(HostAddrsError::Subscribe)?;
        let addrs = list()?;
        tracing::debug!(?addrs, "the host's addresses");
        Ok(Self {
            sock,
            addrs: Mutex::new(addrs),
        })
    }

    /// The addresses now. Reads the notifications queued since the last call and, if there
    /// were any, lists the addresses again; on a failure to list, keeps the last set (and
    /// logs it) rather than forgetting addresses.
    pub fn current(&self) -> Vec<IpAddr> {
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if self.changed() {
            match list() {
                Ok(now) => {
                    if now != *addrs {
                        tracing::info!(addresses = ?now, "the host's addresses changed");
                    }
                    *addrs = now;
                }
                Err(e) => tracing::error!("{e}; keeping the last known addresses"),
            }
        }
        addrs.clone()
    }

    /// Drains the socket; true if any notification (or an overflow) arrived.
    fn changed(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        loop {
            match self.sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(0) => return changed,
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ENOBUFS: notifications were lost; the set may have changed.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) => {
                    tracing::error!("reading address notifications: {e}; listing the addresses");
                    return true;
                }
            }
        }
    }
}

/// Every address configured on the host's interfaces, sorted.
fn list() -> Result<Vec<IpAddr>, HostAddrsError> {
    let mut v: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(HostAddrsError::List)?
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback_and_answers_again_without_change() {
        let h = HostAddrs::open().unwrap();
        let a = h.current();
        assert!(a.iter().any(IpAddr::is_loopback), "{a:?}");
        assert_eq!(h.current(), a);
    }
}
