//! Per-address state, bounded, that forgets the least recently active tenth in one go when
//! full.
//!
//! Under a flood of new addresses every event inserts a source and every tenth of the table's
//! size an eviction must find the oldest. A hash map of the states themselves made that scan
//! read every state (hundreds of bytes each, tens of megabytes in all) per eviction; here the
//! states live in a slab and the scan reads a dense array of activity times.
//!
//! The index ([`AddrIndex`]) holds only a hash tag and the slot of each address, in buckets a
//! batch can ask the CPU for before it looks them up (see [`SourceTable::prefetch_bucket`]).

use std::net::IpAddr;

use super::index::AddrIndex;

/// The activity time of a free slot.
const FREE: u64 = u64::MAX;

/// At most `max` states of type `V` by address.
///
/// Memory: per address it may hold, a `V` and at most 77 bytes more (the address, its activity
/// time, its index entries, its share of the eviction's scratch and of the free list; the
/// figure is `BYTES_PER_ADDRESS`, which a test holds the table to).
#[derive(Debug)]
pub(super) struct SourceTable<V> {
    max: usize,
    index: AddrIndex,
    addrs: Vec<IpAddr>,
    /// Last activity per slot ([`FREE`] for a free one).
    active: Vec<u64>,
    slots: Vec<V>,
    free: Vec<u32>,
    /// Kept between evictions, so each does not allocate (and fault in) a fresh vector.
    scratch: Vec<(u64, u32)>,
}

impl<V> SourceTable<V> {
    /// Heap bytes per address beyond its `V`: 17 (the address), 8 (its activity time), 32 (the
    /// index: fewer than four 8-byte buckets per address), 16 (the eviction's scratch) and 4
    /// (the free list).
    #[cfg(test)]
    pub(super) const BYTES_PER_ADDRESS: usize = 17 + 8 + 32 + 16 + 4;
}

impl<V: Default> SourceTable<V> {
    /// An empty table holding at most `max` addresses.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            index: AddrIndex::new(),
            addrs: Vec::new(),
            active: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The slot of `addr`, if held.
    fn slot(&self, addr: &IpAddr) -> Option<usize> {
        self.index
            .find(self.index.hash(addr), addr, &self.addrs)
            .map(|i| i as usize)
    }

    /// Asks the CPU for the index bucket of `addr`, so that a lookup of it a little later (in
    /// [`SourceTable::prefetch`] or any other) finds it in the caches; reads nothing.
    pub(super) fn prefetch_bucket(&self, addr: &IpAddr) {
        self.index.prefetch(self.index.hash(addr));
    }

    /// Asks the CPU to bring the state, address and activity time of `addr`, if held, into its
    /// caches (see [`super::prefetch`]); changes nothing. It reads `addr`'s index bucket: ask
    /// for that first ([`SourceTable::prefetch_bucket`]) so that this does not wait for memory.
    /// Returns whether `addr` is (almost certainly) held.
    pub(super) fn prefetch(&self, addr: &IpAddr) -> bool {
        self.index.candidates(self.index.hash(addr), |i| {
            let i = i as usize;
            if let (Some(a), Some(t), Some(v)) =
                (self.addrs.get(i), self.active.get(i), self.slots.get(i))
            {
                super::prefetch::value(a);
                super::prefetch::value(t);
                super::prefetch::value(v);
            }
        })
    }

    /// Addresses held.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The state of `addr`.
    pub(super) fn get(&self, addr: &IpAddr) -> Option<&V> {
        self.slot(addr).map(|i| &self.slots[i])
    }

    /// Whether `addr` is held.
    pub(super) fn contains_key(&self, addr: &IpAddr) -> bool {
        self.slot(addr).is_some()
    }

    /// The state of `addr`, to change (its activity time stays as it was).
    pub(super) fn get_mut(&mut self, addr: &IpAddr) -> Option<&mut V> {
        self.slot(addr).map(|i| &mut self.slots[i])
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
        let hash = self.index.hash(&addr);
        if let Some(i) = self.index.find(hash, &addr, &self.addrs) {
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
                if self.slots.len() == self.slots.capacity() {
                    // Doubling, but never past `max`: the slab's bound is the table's.
                    let more = self.slots.len().max(64).min(self.max - self.slots.len());
                    self.addrs.reserve_exact(more);
                    self.active.reserve_exact(more);
                    self.slots.reserve_exact(more);
                }
                self.addrs.push(addr);
                self.active.push(now);
                self.slots.push(V::default());
                self.slots.len() - 1
            }
        };
        self.index.insert(hash, i as u32);
        (&mut self.slots[i], true)
    }

    /// Bytes the table holds on the heap (not counting what a `V` itself may point to): at most
    /// [`SourceTable::BYTES_PER_ADDRESS`] plus the size of a `V` per address it may hold.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self.addrs.capacity() * std::mem::size_of::<IpAddr>()
            + self.active.capacity() * 8
            + self.slots.capacity() * std::mem::size_of::<V>()
            + self.free.capacity() * 4
            + self.scratch.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    fn evict(&mut self) {
        self.scratch.clear();
        // Once, and exactly: growing by doubling could leave it twice the table.
        self.scratch.reserve_exact(self.max);
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
            self.index.remove(self.index.hash(&self.addrs[s]), i);
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

    /// The bound the module states holds through a flood of new addresses, whatever `max` is
    /// (a power of two is the index's worst case).
    #[test]
    fn a_flood_stays_within_the_stated_bytes_per_address() {
        for max in [1000, 1024, 4096, 50_000] {
            let mut t: SourceTable<[u64; 5]> = SourceTable::new(max);
            for i in 0..(max as u32 * 5) {
                t.touch(addr(i.wrapping_mul(2_654_435_761)), u64::from(i));
                assert!(t.len() <= max);
            }
            let bound = max * (40 + SourceTable::<[u64; 5]>::BYTES_PER_ADDRESS);
            assert!(
                t.heap_bytes() <= bound,
                "max {max}: {} bytes, bound {bound}",
                t.heap_bytes()
            );
        }
    }
}
