//! Per-address state, bounded, that forgets the least recently active tenth in one go when
//! full.
//!
//! Under a flood of new addresses every event inserts a source and every tenth of the table's
//! size an eviction must find the oldest. A hash map of the states themselves made that scan
//! read every state (hundreds of bytes each, tens of megabytes in all) per eviction; here the
//! states live in a slab, the map holds only address → slot, and the scan reads a dense array of
//! activity times.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

/// The activity time of a free slot.
const FREE: u64 = u64::MAX;

/// At most `max` states of type `V` by address.
#[derive(Debug)]
pub(super) struct SourceTable<V> {
    max: usize,
    index: FxHashMap<IpAddr, u32>,
    addrs: Vec<IpAddr>,
    /// Last activity per slot ([`FREE`] for a free one).
    active: Vec<u64>,
    slots: Vec<V>,
    free: Vec<u32>,
    /// Kept between evictions, so each does not allocate (and fault in) a fresh vector.
    scratch: Vec<(u64, u32)>,
}

impl<V: Default> SourceTable<V> {
    /// An empty table holding at most `max` addresses.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            index: FxHashMap::default(),
            addrs: Vec::new(),
            active: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Asks the CPU to bring the state and activity time of `addr`, if held, into its caches
    /// (see [`super::prefetch`]); changes nothing.
    pub(super) fn prefetch(&self, addr: &IpAddr) {
        if let Some(&i) = self.index.get(addr) {
            super::prefetch::value(&self.active[i as usize]);
            super::prefetch::value(&self.slots[i as usize]);
        }
    }

    /// Addresses held.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The state of `addr`.
    pub(super) fn get(&self, addr: &IpAddr) -> Option<&V> {
        self.index.get(addr).map(|i| &self.slots[*i as usize])
    }

    /// Whether `addr` is held.
    pub(super) fn contains_key(&self, addr: &IpAddr) -> bool {
        self.index.contains_key(addr)
    }

    /// The state of `addr`, to change (its activity time stays as it was).
    pub(super) fn get_mut(&mut self, addr: &IpAddr) -> Option<&mut V> {
        self.index.get(addr).map(|i| &mut self.slots[*i as usize])
    }

    /// Every address and its state, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&IpAddr, &V)> {
        self.addrs
            .iter()
            .zip(&self.slots)
            .zip(&self.active)
            .filter(|(_, t)| **t != FREE)
            .map(|(a, _)| a)
    }

    /// The state of `addr`, active at `now`: a fresh `V::default()` if the address is new (the
    /// least recently active tenth is forgotten first when the table is full).
    pub(super) fn touch(&mut self, addr: IpAddr, now: u64) -> (&mut V, bool) {
        if let Some(&i) = self.index.get(&addr) {
            let i = i as usize;
            self.active[i] = self.active[i].max(now);
            return (&mut self.slots[i], false);
        }
        if self.index.len() >= self.max {
            self.evict();
        }
        let i = match self.free.pop() {
            Some(i) => {
                let s = i as usize;
                self.addrs[s] = addr;
                self.active[s] = now;
                self.slots[s] = V::default();
                s
            }
            None => {
                self.addrs.push(addr);
                self.active.push(now);
                self.slots.push(V::default());
                self.slots.len() - 1
            }
        };
        self.index.insert(addr, i as u32);
        (&mut self.slots[i], true)
    }

    fn evict(&mut self) {
        self.scratch.clear();
        self.scratch.extend(
            self.active
                .iter()
                .enumerate()
                .filter(|(_, t)| **t != FREE)
                .map(|(i, t)| (*t, i as u32)),
        );
        let n = (self.max / 10).max(1).min(self.scratch.len());
        if n == 0 {
            return;
        }
        self.scratch.select_nth_unstable(n - 1);
        for &(_, i) in &self.scratch[..n] {
            let s = i as usize;
            self.index.remove(&self.addrs[s]);
            self.active[s] = FREE;
            self.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> IpAddr {
        std::net::Ipv4Addr::from(i).into()
    }

    #[test]
    fn bounded_and_forgets_the_least_recently_active() {
        let mut t: SourceTable<u32> = SourceTable::new(100);
        for i in 0..100 {
            *t.touch(addr(i), u64::from(i)).0 = i;
        }
        // The first ten come back to life: the next eviction takes the ten after them.
        for i in 0..10 {
            let (v, new) = t.touch(addr(i), 1000 + u64::from(i));
            assert!(!new);
            assert_eq!(*v, i);
        }
        let (v, new) = t.touch(addr(500), 2000);
        assert!(new && *v == 0, "a new address starts from the default");
        assert_eq!(t.len(), 91);
        assert!((0..10).all(|i| t.get(&addr(i)).is_some()));
        assert!((10..20).all(|i| t.get(&addr(i)).is_none()));
        assert_eq!(t.get(&addr(20)), Some(&20));
        for i in 1000..5000 {
            t.touch(addr(i), u64::from(i) + 10_000);
            assert!(t.len() <= 100);
        }
        let live: Vec<_> = t.iter().map(|(a, _)| *a).collect();
        assert_eq!(live.len(), t.len());
        assert!(live.contains(&addr(4999)));
    }
}
