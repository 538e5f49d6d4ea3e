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
pub const ABI_VERSION: u32 = 2;

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
    /// Per-CPU direct-mapped source cache: array of [`super::SourceSlot`].
    pub const SRC_CACHE: &str = "SW_SRC_CACHE";
    /// Per-CPU clock cache, one [`super::ClockCache`].
    pub const CLOCK: &str = "SW_CLOCK";
    /// Ring buffer of [`super::L7Event`]s: the first bytes of HTTP requests and TLS hellos.
    pub const L7_EVENTS: &str = "SW_L7_EVENTS";
    /// Per-CPU token bucket capping L7 events, one [`super::L7Budget`].
    pub const L7_BUDGET: &str = "SW_L7_BUDGET";
    /// Per-CPU hand-over from the data plane to the sampling program, one [`super::L7Meta`].
    pub const L7_META: &str = "SW_L7_META";
    /// Program array: slot [`super::JUMP_L7`] holds the sampling program.
    pub const JUMP: &str = "SW_JUMP";
    /// TLS flows whose ClientHello is longer than its first segment: LRU hash of
    /// [`super::HelloKey`] to [`super::HelloFlow`], so the continuation segments are sampled too.
    pub const HELLO: &str = "SW_HELLO";
}

/// Program names inside the object.
pub mod programs {
    /// The data-plane XDP program.
    pub const XDP: &str = "swarmwall";
    /// A trivial `XDP_PASS` program: the cost floor the benchmarks compare against.
    pub const FLOOR: &str = "swarmwall_floor";
    /// The L7 sampling program, reached by tail call from [`XDP`].
    pub const L7: &str = "swarmwall_l7";
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
    /// Source cache slots per CPU (a power of two).
    pub const SRC_CACHE: u32 = 1 << 16;
    /// L7 events per second per CPU.
    pub const L7_RATE: u32 = 20_000;
    /// Bytes of the L7 event ring buffer (a power of two, a multiple of the page size).
    pub const L7_RING: u32 = 1 << 22;
    /// Bytes waiting in the L7 ring at which the kernel wakes its reader. Below it records are
    /// submitted without a wake-up (one costs about 2 µs per record on a VM, several times the
    /// sample itself); the reader polls at least every [`super::L7_READER_MAX_WAIT_MS`] instead.
    pub const L7_WAKE_BYTES: u32 = L7_RING / 16;
    /// TLS flows [`super::names::HELLO`] remembers at once (an LRU: a flood of first segments
    /// evicts the oldest, it cannot grow the map).
    pub const HELLO_FLOWS: u32 = 8192;
}

/// The longest a reader of the L7 ring may sleep between looks: what an event waits at most
/// while fewer than [`defaults::L7_WAKE_BYTES`] are pending.
pub const L7_READER_MAX_WAIT_MS: u64 = 10;

/// Payload bytes an [`L7Event`] carries: the request line, `Host`, and as many headers as fit.
pub const L7_SNAP: usize = 512;
/// [`L7Event::kind`]: an HTTP request.
pub const L7_HTTP: u8 = 1;
/// [`L7Event::kind`]: a TLS ClientHello.
pub const L7_TLS: u8 = 2;

/// Bytes of a TLS ClientHello the kernel copies at most, over all its segments (a post-quantum
/// key share makes a browser's hello 1.7–1.9 KB). A multiple of [`L7_SNAP`].
pub const HELLO_MAX: usize = 2048;
/// [`L7Event`] records one segment's share of a hello takes at most.
pub const HELLO_CHUNKS: usize = HELLO_MAX / L7_SNAP;
/// Continuation segments sampled per hello at most, after the first.
pub const HELLO_SEGS: u8 = 3;
/// A remembered hello flow whose next segment has not come within this long is forgotten.
pub const HELLO_TIMEOUT_NS: u64 = 1_000_000_000;

/// [`L7Event::flags`]: the kernel sends no more records for this payload (for a hello: its
/// last bytes, or the last the kernel will copy). HTTP records always carry it.
pub const L7_FLAG_END: u8 = 1;
/// [`L7Event::flags`]: the bytes come from a continuation segment of the hello, not its first.
pub const L7_FLAG_CONT: u8 = 2;

/// Up to [`L7_SNAP`] bytes of a TCP payload that starts an HTTP request or a TLS ClientHello.
///
/// A hello longer than one record comes as several, in order of `offset` from one CPU (those
/// of a continuation segment may come from another): the reader reassembles them per flow
/// (addresses and ports) until it has `total` bytes or a record flagged [`L7_FLAG_END`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7Event {
    /// `CLOCK_MONOTONIC` (coarse) ns.
    pub ts_ns: u64,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// [`L7_HTTP`] or [`L7_TLS`].
    pub kind: u8,
    /// `L7_FLAG_*` bits.
    pub flags: u8,
    /// Bytes of `data` filled (at most [`L7_SNAP`]).
    pub len: u16,
    /// Where `data` starts in the hello (0 for its first bytes, and for HTTP).
    pub offset: u16,
    /// For a hello: its length (record header included) as the record says, at most
    /// [`HELLO_MAX`]; 0 for HTTP.
    pub total: u16,
    /// Explicit padding; zero.
    pub _pad: u32,
    /// The payload's bytes from `offset`.
    pub data: [u8; L7_SNAP],
}
const _: () = assert!(size_of::<L7Event>() == 56 + L7_SNAP);
const _: () = assert!(HELLO_MAX.is_multiple_of(L7_SNAP) && HELLO_MAX <= u16::MAX as usize);

/// Key of [`names::HELLO`]: one TCP flow, client to server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloKey {
    /// Client address.
    pub src: Addr,
    /// Server address.
    pub dst: Addr,
    /// Client port.
    pub src_port: u16,
    /// Server port.
    pub dst_port: u16,
    /// Explicit padding; zero (it is hashed with the key).
    pub _pad: u32,
}
const _: () = assert!(size_of::<HelloKey>() == 40);

/// Value of [`names::HELLO`]: how far the kernel has copied a flow's hello.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloFlow {
    /// When the flow was remembered or last advanced, `CLOCK_MONOTONIC` (coarse) ns.
    pub ts_ns: u64,
    /// TCP sequence number the next segment must carry to be sampled (host byte order).
    pub next_seq: u32,
    /// Bytes of the hello copied so far.
    pub got: u16,
    /// Bytes to copy in all: [`L7Event::total`].
    pub total: u16,
    /// Continuation segments sampled so far.
    pub segs: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<HelloFlow>() == 24);

/// Slot of [`names::JUMP`] that holds the sampling program.
pub const JUMP_L7: u32 = 0;

/// What the data plane hands the sampling program (which it reaches by tail call, so that only
/// TCP traffic to sampled ports pays for sampling code: a BPF-to-BPF call, even an untaken one,
/// doubled the cost of every path).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Meta {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Offset of the TCP header in the frame (the sampling program finds the payload, and the
    /// sequence number that follows a hello's flow, from there).
    pub l4_off: u16,
    /// [`L7_HTTP`] or [`L7_TLS`].
    pub kind: u8,
    /// Explicit padding; zero.
    pub _pad: u8,
}
const _: () = assert!(size_of::<L7Meta>() == 40);

/// Per-CPU token bucket for L7 events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Budget {
    /// Tokens left (events), scaled by 1e9 to keep integer arithmetic exact.
    pub tokens: u64,
    /// When it was last refilled, ns.
    pub last_ns: u64,
}
const _: () = assert!(size_of::<L7Budget>() == 16);

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

/// The address as two little-endian words: how the kernel program compares and hashes it (one
/// load each instead of sixteen).
#[inline(always)]
pub const fn addr_words(a: &Addr) -> [u64; 2] {
    let [
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
        b8,
        b9,
        b10,
        b11,
        b12,
        b13,
        b14,
        b15,
    ] = *a;
    [
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        u64::from_le_bytes([b8, b9, b10, b11, b12, b13, b14, b15]),
    ]
}

/// The address with the given words (inverse of [`addr_words`]).
#[inline(always)]
pub const fn addr_from_words(w: [u64; 2]) -> Addr {
    let [b0, b1, b2, b3, b4, b5, b6, b7] = w[0].to_le_bytes();
    let [b8, b9, b10, b11, b12, b13, b14, b15] = w[1].to_le_bytes();
    [
        b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15,
    ]
}

/// The high word of an IPv4-mapped address whose four octets, read as a little-endian `u32`
/// straight from a packet, are `raw`.
#[inline(always)]
pub const fn v4_mapped_hi(raw: u32) -> u64 {
    0xffff_0000 | ((raw as u64) << 32)
}

/// True if `a` is an IPv4-mapped IPv6 address.
#[inline(always)]
pub const fn is_v4_mapped(a: &Addr) -> bool {
    let [lo, hi] = addr_words(a);
    lo == 0 && hi & 0xffff_ffff == 0xffff_0000
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
pub const fn filter_bit(a: &Addr) -> u32 {
    let [lo, hi] = addr_words(a);
    if lo == 0 && hi & 0xffff_ffff == 0xffff_0000 {
        // Octets 12 and 13 (the IPv4 /16), big-endian.
        (((hi >> 32) as u32 & 0xff) << 8) | ((hi >> 40) as u32 & 0xff)
    } else {
        filter_v6_bucket((lo as u32).swap_bytes())
    }
}

/// Global mode, [`Config::mode`]: rules act.
pub const MODE_ENFORCE: u32 = 0;
/// Global mode, [`Config::mode`]: rules only count what they would have dropped.
pub const MODE_OBSERVE: u32 = 1;

/// [`Config::flags`]: bypass the source cache (every packet takes the cold path). For measuring
/// and diagnosing; counts stay exact either way.
pub const FLAG_CACHE_OFF: u32 = 1;

/// Runtime configuration, slot 0 of [`names::CONFIG`]; changed while attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`MODE_ENFORCE`] or [`MODE_OBSERVE`].
    pub mode: u32,
    /// [`ABI_VERSION`] of the loader that created the maps.
    pub abi_version: u32,
    /// Bumped by userspace after every change to the rule or allow maps; cached lookups tagged
    /// with an older generation are redone. Never 0 (0 marks an empty cache slot).
    pub rules_gen: u32,
    /// Seed of [`src_hash`], random per load, so a sender cannot aim at one cache slot.
    pub hash_seed: u32,
    /// Source cache slots minus one (the cache size is a power of two).
    pub cache_mask: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Destination ports whose HTTP requests are sampled into [`names::L7_EVENTS`]; 0 = unused.
    pub http_ports: [u16; 4],
    /// Destination ports whose TLS ClientHellos are sampled; 0 = unused.
    pub tls_ports: [u16; 2],
    /// L7 events per second per CPU (a burst of one second's worth); 0 turns sampling off.
    pub l7_rate: u32,
    /// Room for later knobs without changing the value size of a pinned map.
    pub reserved: [u32; 6],
}
const _: () = assert!(size_of::<Config>() == 64);

impl Config {
    /// The configuration a fresh load starts with: enforcing.
    pub const fn new() -> Self {
        Self {
            mode: MODE_ENFORCE,
            abi_version: ABI_VERSION,
            rules_gen: 1,
            hash_seed: 0,
            cache_mask: defaults::SRC_CACHE - 1,
            flags: 0,
            http_ports: [80, 8080, 0, 0],
            tls_ports: [443, 0],
            l7_rate: defaults::L7_RATE,
            reserved: [0; 6],
        }
    }
}

/// Hash of a source address for the source cache: a multiply-rotate combine of the four words
/// and murmur3's finalizer, so every input bit reaches the low (index) bits. Cheap in BPF.
#[inline(always)]
pub const fn src_hash(a: &Addr, seed: u32) -> u32 {
    let [lo, hi] = addr_words(a);
    let mut h = seed ^ 0x9e37_79b9;
    h = (h ^ lo as u32).wrapping_mul(0xcc9e_2d51).rotate_left(15);
    h = (h ^ (lo >> 32) as u32)
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15);
    h = (h ^ hi as u32).wrapping_mul(0xcc9e_2d51).rotate_left(15);
    h = (h ^ (hi >> 32) as u32).wrapping_mul(0x1b87_3593);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The kernel program's per-CPU time cache.
///
/// Reading the coarse monotonic clock costs tens of nanoseconds in a VM; `bpf_jiffies64` is
/// inlined into one load. The program re-reads the clock only when jiffies moved, so every time
/// it records is the coarse monotonic clock, at most one tick stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockCache {
    /// Jiffies when `ns` was read.
    pub jiffies: u64,
    /// `CLOCK_MONOTONIC_COARSE` in ns at that tick.
    pub ns: u64,
}
const _: () = assert!(size_of::<ClockCache>() == 16);

/// [`SourceSlot::flags`]: the source is allow-listed.
pub const SLOT_ALLOWED: u32 = 1;

/// One slot of the per-CPU source cache ([`names::SRC_CACHE`]).
///
/// Holds the source's counter deltas not yet flushed into [`names::SOURCES`], and the results of
/// its allow/exact/prefix lookups, valid while [`SourceSlot::generation`] equals
/// [`Config::rules_gen`]. A hot source, passed or dropped, then costs one inlined array lookup
/// instead of two hash lookups and a trie walk. When another source takes the slot, the deltas
/// are added to the LRU hash, so the sum of both is exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// The source this slot holds.
    pub addr: Addr,
    /// Rules generation of the cached lookups; 0 for an empty slot.
    pub generation: u32,
    /// Head of the source's exact-rule chain, or [`NO_RULE`].
    pub exact_head: u32,
    /// Head of the longest matching prefix's chain, or [`NO_RULE`].
    pub prefix_head: u32,
    /// `SLOT_*` bits.
    pub flags: u32,
    /// Counts not yet added to [`names::SOURCES`].
    pub counters: SourceCounters,
}
const _: () = assert!(size_of::<SourceSlot>() == 72);

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
    /// An HTTP request or TLS hello was copied into the L7 ring buffer.
    L7Sampled = 11,
    /// One was skipped: over the per-CPU event budget.
    L7Skipped = 12,
    /// One was lost: the ring buffer was full (userspace not keeping up).
    L7Lost = 13,
    /// A TLS hello longer than its first segment: the flow was remembered for its continuation.
    L7HelloTracked = 14,
    /// A continuation segment of a remembered hello was copied into the ring buffer.
    L7HelloContinued = 15,
}

/// Number of [`Stat`] slots.
pub const STAT_COUNT: usize = 24;

impl Stat {
    /// Every slot, in index order, for rendering.
    pub const ALL: [Stat; 16] = [
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
        Stat::L7Sampled,
        Stat::L7Skipped,
        Stat::L7Lost,
        Stat::L7HelloTracked,
        Stat::L7HelloContinued,
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
            Stat::L7Sampled => "l7_sampled",
            Stat::L7Skipped => "l7_skipped",
            Stat::L7Lost => "l7_lost",
            Stat::L7HelloTracked => "l7_hello_tracked",
            Stat::L7HelloContinued => "l7_hello_continued",
        }
    }
}

/// Global counters, slot 0 of the per-CPU [`names::STATS`] array; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalStats {
    /// Indexed by [`Stat`]; the slots past [`Stat::ALL`] are spare.
    pub counters: [u64; STAT_COUNT],
}
const _: () = assert!(size_of::<GlobalStats>() == 8 * STAT_COUNT);
const _: () = assert!(Stat::ALL.len() < STAT_COUNT);

/// Per-source counters, one per CPU in the [`names::SOURCES`] LRU hash (flushed totals) and in
/// each [`SourceSlot`] (deltas since the last flush); a source's count is the sum of both.
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
/// actually dropped (not in observe mode, not an observe-only rule).
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClockCache {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L7Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L7Budget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L7Meta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HelloKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HelloFlow {}
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
    fn words_round_trip_and_match_v4_mapping() {
        let a = v4_mapped([198, 51, 100, 7]);
        assert_eq!(addr_from_words(addr_words(&a)), a);
        let raw = u32::from_le_bytes([198, 51, 100, 7]);
        assert_eq!(addr_words(&a), [0, v4_mapped_hi(raw)]);
        let v6: Addr = [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(addr_from_words(addr_words(&v6)), v6);
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
    fn src_hash_spreads_neighbours_and_depends_on_seed() {
        let a = v4_mapped([198, 51, 100, 1]);
        let b = v4_mapped([198, 51, 100, 2]);
        assert_ne!(src_hash(&a, 1) & 0xffff, src_hash(&b, 1) & 0xffff);
        assert_ne!(src_hash(&a, 1), src_hash(&a, 2));
        // 4096 consecutive addresses fill most of 4096 buckets (no clustering).
        let mut seen = [false; 4096];
        for i in 0..4096u32 {
            let o = i.to_be_bytes();
            seen[(src_hash(&v4_mapped([10, o[1], o[2], o[3]]), 7) & 4095) as usize] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 2400);
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
