//! The presence filter in front of an LPM trie (see [`swarmwall_maps::filter_bit`]).
//!
//! Userspace keeps a reference count per bit so a bit clears only when the last prefix that needed
//! it is gone, and reports which `u64` words changed so only those are written to the kernel.

use std::collections::HashMap;

use swarmwall_maps::{
    Addr, FILTER_V4_BITS, FILTER_V6_BITS, FILTER_V6_BUCKETS, FILTER_WORDS, filter_bit,
    filter_v6_bucket, is_v4_mapped,
};

/// Reference-counted mirror of one kernel filter array.
#[derive(Debug)]
pub struct PrefixFilter {
    counts: HashMap<u32, u32>,
    words: Vec<u64>,
}

impl Default for PrefixFilter {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
            words: vec![0; FILTER_WORDS as usize],
        }
    }
}

/// Widest IPv6 prefix (in /32s it spans, as a power of two) whose buckets are enumerated; a wider
/// one sets every IPv6 bucket.
const V6_ENUMERATE_MAX: u32 = 16;

/// The filter bits a prefix (key bits and length in the 128-bit space) covers.
pub fn bits_of(key: &Addr, len: u32) -> Vec<u32> {
    if is_v4_mapped(key) && len >= 96 {
        let first = filter_bit(key);
        let own = len - 96;
        let span = if own >= FILTER_V4_BITS as u32 {
            1
        } else {
            1 << (FILTER_V4_BITS as u32 - own)
        };
        return (first..first + span).collect();
    }
    let v6 = FILTER_V6_BITS as u32;
    if len >= v6 {
        return vec![filter_bit(key)];
    }
    if v6 - len > V6_ENUMERATE_MAX {
        return ((1 << 16)..(1 << 16) + FILTER_V6_BUCKETS).collect();
    }
    let top = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut bits: Vec<u32> = (0..1u32 << (v6 - len))
        .map(|i| filter_v6_bucket(top | i))
        .collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

impl PrefixFilter {
    /// Counts a prefix in; returns the words that changed, with their new value.
    pub fn add(&mut self, key: &Addr, len: u32) -> Vec<(u32, u64)> {
        let mut changed = Vec::new();
        for bit in bits_of(key, len) {
            let c = self.counts.entry(bit).or_insert(0);
            *c += 1;
            if *c == 1 {
                self.set(bit, true, &mut changed);
            }
        }
        changed
    }

    /// Counts a prefix out; returns the words that changed, with their new value.
    pub fn remove(&mut self, key: &Addr, len: u32) -> Vec<(u32, u64)> {
        let mut changed = Vec::new();
        for bit in bits_of(key, len) {
            if let Some(c) = self.counts.get_mut(&bit) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&bit);
                    self.set(bit, false, &mut changed);
                }
            }
        }
        changed
    }

    /// True if the bit for `addr` is set.
    pub fn has(&self, addr: &Addr) -> bool {
        let bit = filter_bit(addr);
        self.words[(bit >> 6) as usize] >> (bit & 63) & 1 == 1
    }

    fn set(&mut self, bit: u32, on: bool, changed: &mut Vec<(u32, u64)>) {
        let w = (bit >> 6) as usize;
        if on {
            self.words[w] |= 1 << (bit & 63);
        } else {
            self.words[w] &= !(1 << (bit & 63));
        }
        match changed.last_mut() {
            Some((idx, val)) if *idx == w as u32 => *val = self.words[w],
            _ => changed.push((w as u32, self.words[w])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Target;

    fn key(s: &str) -> (Addr, u32) {
        s.parse::<Target>().unwrap().key()
    }

    #[test]
    fn covers_what_the_prefix_covers() {
        let mut f = PrefixFilter::default();
        let (k, l) = key("10.0.0.0/8");
        assert_eq!(bits_of(&k, l).len(), 256);
        f.add(&k, l);
        assert!(f.has(&key("10.255.1.1").0));
        assert!(!f.has(&key("11.0.0.1").0));
        let (k6, l6) = key("2001:db8::/32");
        f.add(&k6, l6);
        assert!(f.has(&key("2001:db8:ffff::1").0));
        assert!(!f.has(&key("2001:db9::1").0));
        let (k6, l6) = key("2a00::/24");
        assert_eq!(bits_of(&k6, l6).len(), 256);
        f.add(&k6, l6);
        assert!(f.has(&key("2a00:ff::1").0));
        assert_eq!(
            bits_of(&key("2000::/3").0, 3).len(),
            FILTER_V6_BUCKETS as usize
        );
    }

    #[test]
    fn bit_clears_with_the_last_user() {
        let mut f = PrefixFilter::default();
        let (a, la) = key("198.51.100.0/24");
        let (b, lb) = key("198.51.0.0/16");
        assert_eq!(f.add(&a, la).len(), 1);
        assert!(f.add(&b, lb).is_empty(), "same bit: no word changes");
        assert!(f.remove(&a, la).is_empty());
        assert!(f.has(&key("198.51.7.7").0));
        assert_eq!(f.remove(&b, lb).len(), 1);
        assert!(!f.has(&key("198.51.7.7").0));
    }
}
