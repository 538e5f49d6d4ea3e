//! The address → slot index of a [`super::table::SourceTable`]: open addressing with linear
//! probing over one array of 8-byte entries (a 32-bit tag of the address's hash and the slot).
//!
//! Why not a hash map: under a flood of new addresses every event looks up an address the
//! table does not hold, in several tables (sources, wide records, prefixes), and each lookup is
//! a miss to memory. Those misses can only overlap when the lookup's bucket is known before the
//! lookup runs: here it is `tag & mask`, so [`AddrIndex::prefetch`] asks for it events ahead
//! ([`super::Detector::observe_batch`]) without reading anything. A lookup then reads one cache
//! line (8 entries) in most cases, and the slab's address only when a tag matches.
//!
//! Removal shifts the entries of the probe run back (no tombstones), so a flood that inserts
//! and evicts forever never degrades the probe lengths. The load stays under 1/2; the seed of
//! the hash is per index, since addresses are chosen by whoever sends the packets.

use std::{hash::BuildHasher as _, net::IpAddr};

/// A free entry.
const EMPTY: u64 = 0;

/// Buckets of a new index (grows by doubling).
const MIN_BUCKETS: usize = 64;

/// The hash of an address as the index uses it (see [`AddrIndex::hash`]): its bucket is the hash
/// modulo the buckets, and its entry keeps it whole as the tag.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hash(u32);

/// Slots (`u32`, below `u32::MAX`) by address; the addresses themselves live in the caller's
/// slab, which every call that compares addresses passes in.
#[derive(Debug)]
pub(super) struct AddrIndex {
    /// `tag << 32 | (slot + 1)`; [`EMPTY`] is free.
    entries: Vec<u64>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

fn entry(tag: Hash, slot: u32) -> u64 {
    (u64::from(tag.0) << 32) | (u64::from(slot) + 1)
}

fn slot_of(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

fn tag_of(e: u64) -> u32 {
    (e >> 32) as u32
}

impl AddrIndex {
    /// An empty index.
    pub(super) fn new() -> Self {
        Self {
            entries: vec![EMPTY; MIN_BUCKETS],
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Bytes of its buckets.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * 8
    }

    /// Addresses held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The hash of `addr`; the same address always has the same hash in one index.
    pub(super) fn hash(&self, addr: &IpAddr) -> Hash {
        // The high half: foldhash mixes its last multiply into it.
        Hash((self.hasher.hash_one(addr) >> 32) as u32)
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// Asks the CPU for the bucket `hash` starts at (see [`super::prefetch`]); reads nothing.
    pub(super) fn prefetch(&self, hash: Hash) {
        super::prefetch::value(&self.entries[self.home(hash.0)]);
    }

    /// Calls `f` with every slot held under `hash`, without comparing addresses (reading one
    /// would wait for memory, which is what a prefetch must not do); returns whether there was
    /// one. Almost always that is the one slot of the address, or none: another address shares
    /// the whole 32-bit hash once in four billion.
    pub(super) fn candidates(&self, hash: Hash, mut f: impl FnMut(u32)) -> bool {
        let mask = self.mask();
        let mut i = self.home(hash.0);
        let mut any = false;
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return any;
            }
            if tag_of(e) == hash.0 {
                any = true;
                f(slot_of(e));
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot of `addr` (whose hash is `hash`), if held; `addrs` is the slab by slot.
    pub(super) fn find(&self, hash: Hash, addr: &IpAddr, addrs: &[IpAddr]) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(hash.0);
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return None;
            }
            if tag_of(e) == hash.0 && addrs.get(slot_of(e) as usize) == Some(addr) {
                return Some(slot_of(e));
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `slot` (not held) under `hash`.
    pub(super) fn insert(&mut self, hash: Hash, slot: u32) {
        debug_assert!(slot < u32::MAX);
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(entry(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = self.home(tag_of(e));
        while self.entries[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    /// Doubles the buckets. The tag is the whole hash, so no address is read: every entry
    /// finds its new home from its tag.
    fn grow(&mut self) {
        let buckets = self.entries.len() * 2;
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; buckets]);
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(e);
        }
    }

    /// Removes `slot`, held under `hash`; false if it was not.
    pub(super) fn remove(&mut self, hash: Hash, slot: u32) -> bool {
        let mask = self.mask();
        let mut i = self.home(hash.0);
        let target = entry(hash, slot);
        loop {
            match self.entries[i] {
                EMPTY => return false,
                e if e == target => break,
                _ => i = (i + 1) & mask,
            }
        }
        self.len -= 1;
        // Backward shift: an entry later in the run moves into the hole unless its home lies
        // cyclically after the hole (then it would be found before reaching the hole anyway).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = self.home(tag_of(e));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = e;
                hole = j;
            }
        }
        self.entries[hole] = EMPTY;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn addr(i: u32) -> IpAddr {
        std::net::Ipv4Addr::from(i).into()
    }

    /// Random inserts and removes against a `HashMap`, with small and colliding tables (the
    /// backward shift wraps around the end), must agree at every step.
    #[test]
    fn agrees_with_a_map_through_inserts_removes_and_growth() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut idx = AddrIndex::new();
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut model: HashMap<IpAddr, u32> = HashMap::new();
        let mut free: Vec<u32> = Vec::new();
        for step in 0..50_000 {
            // Few distinct addresses, so that removes and re-inserts of the same one are common.
            let a = addr((next() % 3000) as u32);
            let h = idx.hash(&a);
            assert_eq!(
                idx.find(h, &a, &addrs),
                model.get(&a).copied(),
                "step {step}"
            );
            match model.get(&a).copied() {
                Some(slot) if next() % 3 != 0 => {
                    assert!(idx.remove(h, slot));
                    assert!(!idx.remove(h, slot), "a second remove finds nothing");
                    model.remove(&a);
                    free.push(slot);
                }
                Some(_) => {}
                None => {
                    let slot = free.pop().unwrap_or_else(|| {
                        addrs.push(a);
                        (addrs.len() - 1) as u32
                    });
                    addrs[slot as usize] = a;
                    idx.insert(h, slot);
                    model.insert(a, slot);
                }
            }
            assert_eq!(idx.len(), model.len());
        }
        for (a, slot) in &model {
            assert_eq!(idx.find(idx.hash(a), a, &addrs), Some(*slot));
        }
        assert!(idx.entries.len() >= 2 * idx.len());
    }
}
