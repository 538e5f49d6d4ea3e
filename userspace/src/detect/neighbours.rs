//! Who lives in each /24 (IPv4) and /64 (IPv6): a bounded record of a few sources per prefix
//! that outlives the source table. The policy collapses a swarm's members into one prefix rule
//! only when every source seen in the prefix is a member; under a flood of new sources the
//! source table evicts quiet legitimate neighbours, and without this record a /24 would then
//! look as if only the swarm lived there.
//!
//! Each prefix keeps up to [`NEIGHBOURS`] addresses. A slot is given up only by a swarm member
//! (marked at the tick that found it) or by an address not seen for `keep`; otherwise the
//! residents stay and a newcomer is not recorded, so a flood of bots inside a prefix cannot
//! push its legitimate residents out. Prefixes are evicted least recently active first (a
//! tenth at a time) beyond `max_prefixes`.
//!
//! Memory: at most `max_prefixes` prefixes, each a [`Prefix`] (72 bytes) in a
//! [`SourceTable`] (77 bytes more per prefix): the default 65,536 take at most 9.8 MB.

use std::net::IpAddr;

use super::table::SourceTable;

/// Addresses remembered per prefix.
pub const NEIGHBOURS: usize = 4;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The host part: the last octet (IPv4) or the interface id (IPv6).
    host: u64,
    /// Last seen, event-time seconds plus one; 0: empty.
    last: u32,
    /// A member of a swarm: its slot is free for a newcomer.
    member: bool,
}

/// One prefix's residents.
#[derive(Clone, Debug, Default)]
pub(super) struct Prefix {
    last_ns: u64,
    slots: [Slot; NEIGHBOURS],
}

/// The record, per /24 and /64.
pub(super) struct Neighbours {
    prefixes: SourceTable<Prefix>,
    keep_s: u32,
}

/// The /24 or /64 of `ip` (as its first address) and the host part within it.
fn split(ip: IpAddr) -> (IpAddr, u64) {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (IpAddr::from([o[0], o[1], o[2], 0]), u64::from(o[3]))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            (
                IpAddr::V6((bits & !u128::from(u64::MAX)).into()),
                bits as u64,
            )
        }
    }
}

/// `host` within the prefix `net` (as [`split`] gave them).
fn join(net: IpAddr, host: u64) -> IpAddr {
    match net {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::from([o[0], o[1], o[2], host as u8])
        }
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | u128::from(host)).into()),
    }
}

fn secs(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000_000)
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1)
}

impl Neighbours {
    /// A record of at most `max` prefixes whose silent residents give way after `keep_s`
    /// seconds.
    pub(super) fn new(max: usize, keep_s: u32) -> Self {
        Self {
            prefixes: SourceTable::new(max),
            keep_s,
        }
    }

    /// Asks the CPU for what noting `ip` reads: the index bucket of its prefix (see
    /// [`SourceTable::prefetch_bucket`]).
    pub(super) fn prefetch(&self, ip: IpAddr) {
        self.prefixes.prefetch_bucket(&split(ip).0);
    }

    /// Notes `ip` seen at `now_ns` unless the caller's state of the source says it was noted
    /// (`*noted_ns`) within a quarter of `keep`: a source the detector holds needs no record
    /// (the policy sees it there), only one that outlives it when the table evicts it, so a
    /// few notes per `keep` do, not one per event. `new`: the state is fresh.
    pub(super) fn note_due(&mut self, ip: IpAddr, noted_ns: &mut u64, new: bool, now_ns: u64) {
        let every = u64::from(self.keep_s) * 250_000_000;
        if new || now_ns.saturating_sub(*noted_ns) >= every {
            *noted_ns = now_ns;
            self.note(ip, now_ns);
        }
    }

    /// Notes `ip` seen at `now_ns`.
    fn note(&mut self, ip: IpAddr, now_ns: u64) {
        let (net, host) = split(ip);
        let now = secs(now_ns);
        let (p, _) = self.prefixes.touch(net, now_ns);
        p.last_ns = p.last_ns.max(now_ns);
        if let Some(s) = p.slots.iter_mut().find(|s| s.last != 0 && s.host == host) {
            s.last = s.last.max(now);
            return;
        }
        let keep = self.keep_s;
        let free = p
            .slots
            .iter_mut()
            .filter(|s| s.last == 0 || s.member || now.saturating_sub(s.last) > keep)
            .min_by_key(|s| (s.last != 0, !s.member, s.last));
        if let Some(s) = free {
            *s = Slot {
                host,
                last: now,
                member: false,
            };
        }
    }

    /// Marks `members` as swarm members: their slots are free for newcomers.
    pub(super) fn mark_members<'a>(&mut self, members: impl IntoIterator<Item = &'a IpAddr>) {
        for m in members {
            let (net, host) = split(*m);
            if let Some(p) = self.prefixes.get_mut(&net)
                && let Some(s) = p.slots.iter_mut().find(|s| s.last != 0 && s.host == host)
            {
                s.member = true;
            }
        }
    }

    /// Every recorded address.
    pub(super) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.prefixes.iter().flat_map(|(net, p)| {
            p.slots
                .iter()
                .filter(|s| s.last != 0)
                .map(|s| join(*net, s.host))
        })
    }

    /// Prefixes recorded.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.prefixes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn residents_stay_while_bots_come_and_members_give_way() {
        let mut n = Neighbours::new(100, 600);
        n.note(ip("192.0.2.200"), 1_000_000_000);
        for h in 1..=50u8 {
            n.note(IpAddr::from([192, 0, 2, h]), 2_000_000_000);
        }
        let got: Vec<IpAddr> = n.addresses().collect();
        assert!(got.contains(&ip("192.0.2.200")), "{got:?}");
        assert_eq!(got.len(), NEIGHBOURS);
        // Once the bots are members, a newcomer takes one of their slots.
        let bots: Vec<IpAddr> = got
            .iter()
            .copied()
            .filter(|a| *a != ip("192.0.2.200"))
            .collect();
        n.mark_members(&bots);
        n.note(ip("192.0.2.201"), 3_000_000_000);
        let got: Vec<IpAddr> = n.addresses().collect();
        assert!(got.contains(&ip("192.0.2.200")) && got.contains(&ip("192.0.2.201")));
    }

    #[test]
    fn ipv6_hosts_are_kept_per_64_and_the_prefix_count_is_bounded() {
        let mut n = Neighbours::new(1000, 600);
        n.note(ip("2001:db8:bad:1::ffff"), 1);
        assert_eq!(
            n.addresses().collect::<Vec<_>>(),
            vec![ip("2001:db8:bad:1::ffff")]
        );
        for i in 0..20_000u32 {
            n.note(IpAddr::V4((i << 8).into()), u64::from(i) + 2);
        }
        assert!(n.len() <= 1000);
        assert_eq!(std::mem::size_of::<(IpAddr, Prefix)>(), 96);
    }
}
