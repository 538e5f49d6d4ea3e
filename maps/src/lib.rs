//! The kernel/userspace ABI of swarmwall.
//!
//! Every key, value and configuration slot that crosses the boundary between the XDP program
//! (`ebpf/`) and the daemon (`userspace/`) is defined here, once. Each type is `#[repr(C)]`, has no
//! implicit padding (padding bytes that differ between writer and reader make hash lookups miss
//! silently) and carries a compile-time size assertion. Changing any of them is an ABI change:
//! bump [`ABI_VERSION`].
#![no_std]

use core::mem::size_of;

/// Version of this ABI. Stored in [`Config::abi_version`] by the loader so that a daemon can
/// refuse maps pinned by an incompatible build instead of misreading them.
pub const ABI_VERSION: u32 = 1;

/// Map names, shared by the kernel program's statics and the userspace loader.
///
/// The kernel keeps at most 15 characters of a map name, so every name stays within that.
pub mod names {
    /// [`super::Config`] array, one slot.
    pub const CONFIG: &str = "SW_CONFIG";
    /// [`super::GlobalStats`] per-CPU array, one slot.
    pub const STATS: &str = "SW_STATS";
    /// Per-source [`super::SourceCounters`], LRU per-CPU hash keyed by [`super::Addr`].
    pub const SOURCES: &str = "SW_SOURCES";
    /// Allow list: LPM trie of [`super::Addr`] prefixes to an allow-entry id (`u64`).
    pub const ALLOW: &str = "SW_ALLOW";
    /// Presence bitmap in front of [`ALLOW`], see [`super::filter_bit`].
    pub const ALLOW_FILTER: &str = "SW_ALLOW_FILT";
    /// Exact-address block rules: hash of [`super::Addr`] to the head rule slot (`u32`).
    pub const EXACT: &str = "SW_EXACT";
    /// Prefix block rules: LPM trie of [`super::Addr`] prefixes to the head rule slot (`u32`).
    pub const PREFIX: &str = "SW_PREFIX";
    /// Presence bitmap in front of [`PREFIX`], see [`super::filter_bit`].
    pub const PREFIX_FILTER: &str = "SW_PREFIX_FILT";
    /// Rule slots: array of [`super::Rule`].
    pub const RULES: &str = "SW_RULES";
    /// Per-rule hit counters: per-CPU array of [`super::RuleHits`], indexed like [`RULES`].
    pub const RULE_HITS: &str = "SW_RULE_HITS";
}

/// Program names inside the object.
pub mod programs {
    /// The data-plane XDP program.
    pub const XDP: &str = "swarmwall";
    /// A trivial `XDP_PASS` program: the cost floor the benchmarks compare against.
    pub const FLOOR: &str = "swarmwall_floor";
}

/// Default capacities; the loader may override each before load.
pub mod defaults {
    /// Tracked sources in [`super::names::SOURCES`].
    pub const SOURCES: u32 = 1 << 20;
    /// Single-address rule keys.
    pub const EXACT: u32 = 1 << 18;
    /// Prefix rule keys.
    pub const PREFIX: u32 = 1 << 16;
    /// Allow-list prefixes.
    pub const ALLOW: u32 = 1 << 14;
    /// Rule slots (shared by exact and prefix chains).
    pub const RULES: u32 = (1 << 18) + (1 << 16);
}

/// A source or destination address: IPv6, with IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
pub type Addr = [u8; 16];

/// Maximum number of rules the kernel evaluates for one key (its own plus inherited ones).
pub const MAX_CHAIN: u32 = 8;

/// Marks the end of a rule chain.
pub const NO_RULE: u32 = u32::MAX;

/// Returns the IPv4-mapped form of an IPv4 address given as its four octets.
#[inline(always)]
pub const fn v4_mapped(o: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3],
    ]
}

/// True if `a` is an IPv4-mapped IPv6 address.
#[inline(always)]
pub fn is_v4_mapped(a: &Addr) -> bool {
    a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

/// Bits in a prefix presence filter: one per IPv4 /16, then [`FILTER_V6_BUCKETS`] buckets for
/// IPv6 /32s.
pub const FILTER_BITS: u32 = (1 << 16) + FILTER_V6_BUCKETS;
/// IPv6 buckets of a presence filter.
pub const FILTER_V6_BUCKETS: u32 = 1 << 20;
/// `u64` words in a prefix presence filter array.
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;
/// Bits of an IPv4 address that index the filter.
pub const FILTER_V4_BITS: u8 = 16;
/// Bits of an IPv6 address that are hashed into a filter bucket.
pub const FILTER_V6_BITS: u8 = 32;

/// The filter bucket of the top 32 bits of an IPv6 address (a Fibonacci hash: nearby /32s land in
/// different buckets, so one blocked /32 does not flag its neighbours).
#[inline(always)]
pub const fn filter_v6_bucket(top32: u32) -> u32 {
    (1 << 16) | (top32.wrapping_mul(0x9e37_79b1) >> 12)
}

/// The filter bit an address falls in.
///
/// An LPM lookup walks the trie: tens of nanoseconds per packet. The filter lets the kernel skip
/// the walk when no prefix in the trie can cover the address, which is the common case for an
/// unknown source. Userspace sets, for every prefix, the bits of all addresses it covers: one bit
/// for an IPv4 prefix of /16 or longer or an IPv6 prefix of /32 or longer, more for wider ones.
#[inline(always)]
pub fn filter_bit(a: &Addr) -> u32 {
    if is_v4_mapped(a) {
        ((a[12] as u32) << 8) | a[13] as u32
    } else {
        filter_v6_bucket(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
    }
}

/// Global mode, [`Config::mode`]: rules act.
pub const MODE_ENFORCE: u32 = 0;
/// Global mode, [`Config::mode`]: rules only count what they would have dropped.
pub const MODE_OBSERVE: u32 = 1;

/// Runtime configuration, slot 0 of [`names::CONFIG`]; changed while attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`MODE_ENFORCE`] or [`MODE_OBSERVE`].
    pub mode: u32,
    /// [`ABI_VERSION`] of the loader that created the maps.
    pub abi_version: u32,
    /// Room for later knobs (ports, budgets) without changing the value size of a pinned map.
    pub reserved: [u32; 14],
}
const _: () = assert!(size_of::<Config>() == 64);

impl Config {
    /// The configuration a fresh load starts with: enforcing.
    pub const fn new() -> Self {
        Self {
            mode: MODE_ENFORCE,
            abi_version: ABI_VERSION,
            reserved: [0; 14],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// Named slots of [`GlobalStats::counters`]. Each packet increments `Seen` and exactly one of
/// the verdict slots (`Passed` .. `ParseFailed`); `L4Truncated` and `Fragment` are extra detail.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every packet the program saw.
    Seen = 0,
    /// Passed: no rule matched.
    Passed = 1,
    /// Passed because the source is allow-listed.
    Allowed = 2,
    /// Dropped by an exact-address rule.
    DroppedExact = 3,
    /// Dropped by a prefix rule.
    DroppedPrefix = 4,
    /// Passed, but a rule (observe-only, or any rule in observe mode) would have dropped it.
    Observed = 5,
    /// Passed: not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp = 6,
    /// Passed: truncated or malformed before the source address was known.
    ParseFailed = 7,
    /// L4 header missing or truncated: ports unknown, port-scoped rules cannot match.
    L4Truncated = 8,
    /// Non-first fragment: no ports.
    Fragment = 9,
    /// A new source could not be inserted into the counters map.
    SourceInsertFailed = 10,
}

/// Number of [`Stat`] slots.
pub const STAT_COUNT: usize = 12;

impl Stat {
    /// Every slot, in index order, for rendering.
    pub const ALL: [Stat; 11] = [
        Stat::Seen,
        Stat::Passed,
        Stat::Allowed,
        Stat::DroppedExact,
        Stat::DroppedPrefix,
        Stat::Observed,
        Stat::NotIp,
        Stat::ParseFailed,
        Stat::L4Truncated,
        Stat::Fragment,
        Stat::SourceInsertFailed,
    ];

    /// A stable, machine-friendly name.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Seen => "seen",
            Stat::Passed => "passed",
            Stat::Allowed => "allowed",
            Stat::DroppedExact => "dropped_exact",
            Stat::DroppedPrefix => "dropped_prefix",
            Stat::Observed => "observed",
            Stat::NotIp => "not_ip",
            Stat::ParseFailed => "parse_failed",
            Stat::L4Truncated => "l4_truncated",
            Stat::Fragment => "fragment",
            Stat::SourceInsertFailed => "source_insert_failed",
        }
    }
}

/// Global counters, slot 0 of the per-CPU [`names::STATS`] array; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalStats {
    /// Indexed by [`Stat`]; the last slot is spare.
    pub counters: [u64; STAT_COUNT],
}
const _: () = assert!(size_of::<GlobalStats>() == 8 * STAT_COUNT);
const _: () = assert!(Stat::ALL.len() < STAT_COUNT);

/// Per-source counters, one per CPU in the [`names::SOURCES`] LRU hash.
///
/// Packets dropped by an exact-address rule are not counted here: the rule names exactly one
/// address, so its [`RuleHits`] are that source's drop count, and skipping the counter update keeps
/// the drop path at one hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole frames).
    pub bytes: u64,
    /// Of those, packets dropped (by a prefix rule).
    pub dropped: u64,
    /// `CLOCK_MONOTONIC` (coarse) time of the first packet, ns.
    pub first_seen_ns: u64,
    /// `CLOCK_MONOTONIC` (coarse) time of the latest packet, ns.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<SourceCounters>() == 40);

/// [`Rule::action`]: slot unused.
pub const ACTION_NONE: u8 = 0;
/// [`Rule::action`]: drop matching packets.
pub const ACTION_DROP: u8 = 1;
/// [`Rule::action`]: pass matching packets, counting them as would-have-dropped.
pub const ACTION_OBSERVE: u8 = 2;

/// [`Rule::scope_flags`]: match only packets to [`Rule::scope_dst`].
pub const SCOPE_DST: u8 = 1;
/// [`Rule::scope_flags`]: match only packets of IP protocol [`Rule::scope_proto`].
pub const SCOPE_PROTO: u8 = 2;
/// [`Rule::scope_flags`]: match only TCP/UDP packets to port [`Rule::scope_port`].
pub const SCOPE_PORT: u8 = 4;

/// One block rule, a slot of the [`names::RULES`] array.
///
/// Rules for one key form a chain through [`Rule::next`]. A prefix's chain continues into the
/// chain of the nearest covering prefix, so the kernel sees inherited rules without walking the
/// trie twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Rule id assigned by userspace; stable across reloads.
    pub id: u64,
    /// Expiry in `CLOCK_MONOTONIC` ns; 0 means never. Checked in the kernel, so an expired rule
    /// stops matching even if no daemon is running to remove it.
    pub expires_ns: u64,
    /// Destination address the rule is scoped to, if [`SCOPE_DST`].
    pub scope_dst: Addr,
    /// Next slot in the chain, or [`NO_RULE`].
    pub next: u32,
    /// Destination port (host byte order), if [`SCOPE_PORT`].
    pub scope_port: u16,
    /// IP protocol number, if [`SCOPE_PROTO`].
    pub scope_proto: u8,
    /// [`ACTION_DROP`] or [`ACTION_OBSERVE`]; [`ACTION_NONE`] for an unused slot.
    pub action: u8,
    /// Bit set of `SCOPE_*`.
    pub scope_flags: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<Rule>() == 48);

impl Rule {
    /// An unused slot.
    pub const EMPTY: Rule = Rule {
        id: 0,
        expires_ns: 0,
        scope_dst: [0; 16],
        next: NO_RULE,
        scope_port: 0,
        scope_proto: 0,
        action: ACTION_NONE,
        scope_flags: 0,
        _pad: [0; 7],
    };
}

/// Per-rule hit counters, one per CPU, indexed by rule slot.
///
/// `packets`/`bytes` count every packet the rule decided; the `dropped_*` fields count those
/// actually dropped (not in observe mode, not an observe-only rule). For an exact-address rule the
/// dropped counts are the source's drops, which the per-source counters leave out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHits {
    /// Packets the rule decided (dropped, or would have dropped).
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Packets it dropped.
    pub dropped_packets: u64,
    /// Bytes it dropped.
    pub dropped_bytes: u64,
}
const _: () = assert!(size_of::<RuleHits>() == 32);

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], Copy, made only of integers and integer arrays, and has no
    // implicit padding (the size assertions above pin the layout), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GlobalStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleHits {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_round_trips() {
        let a = v4_mapped([192, 0, 2, 1]);
        assert!(is_v4_mapped(&a));
        assert_eq!(&a[12..], &[192, 0, 2, 1]);
        let mut v6 = a;
        v6[10] = 0;
        assert!(!is_v4_mapped(&v6));
    }

    #[test]
    fn filter_bits_split_families() {
        assert_eq!(filter_bit(&v4_mapped([198, 51, 100, 7])), (198 << 8) | 51);
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut next = v6;
        next[3] = 0xb9;
        assert!(filter_bit(&v6) >= 1 << 16);
        assert_ne!(
            filter_bit(&v6),
            filter_bit(&next),
            "adjacent /32s share a bucket"
        );
        assert!(filter_bit(&[0xff; 16]) < FILTER_BITS);
    }

    #[test]
    fn stat_names_are_unique_and_indexed() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            for t in &Stat::ALL[i + 1..] {
                assert_ne!(s.name(), t.name());
            }
        }
    }
}
