//! swarmwall's XDP data plane: count every packet per source, drop listed sources and prefixes.
//!
//! Per packet:
//! 1. parse (bounded, every access checked); a packet whose source is unknown passes;
//! 2. look the source up in this CPU's direct-mapped source cache. A hit (same address, lookups
//!    done under the current rules generation) gives the allow/exact/prefix results without
//!    touching a hash or a trie: the common case for any busy source, blocked or not;
//! 3. on a miss, flush the previous occupant's counts into the LRU hash and do the lookups:
//!    allow list, exact rules, prefix rules (each LPM walk behind a presence filter);
//! 4. decide: the allow list wins, then the first live matching drop rule (exact chain, then
//!    prefix chain), else an observe rule;
//! 5. count in the cache slot, and on the deciding rule.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
        lpm_trie::Key,
    },
    programs::XdpContext,
};
use swarmwall_maps::{
    ACTION_DROP, ACTION_OBSERVE, Addr, ClockCache, Config, FLAG_CACHE_OFF, GlobalStats,
    HELLO_CHUNKS, HELLO_MAX, HELLO_SEGS, HELLO_TIMEOUT_NS, HelloFlow, HelloKey, JUMP_L7,
    L7_FLAG_CONT, L7_FLAG_END, L7_HTTP, L7_SNAP, L7_TLS, L7Budget, L7Event, L7Meta, MAX_CHAIN,
    MODE_OBSERVE, NO_RULE, Rule, RuleHits, SCOPE_DST, SCOPE_PORT, SCOPE_PROTO, SLOT_ALLOWED,
    STAT_COUNT, SourceCounters, SourceSlot, Stat, addr_words, defaults, filter_bit, src_hash,
};

use crate::parse::{Packet, field, header, parse};

#[map(name = "SW_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "SW_STATS")]
static STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);

// One LRU list for all CPUs (no BPF_F_NO_COMMON_LRU): per-CPU lists would split the capacity
// by the CPU count, so a host whose traffic lands on one CPU would track only a fraction of the
// configured sources. The list lock is taken only when a source cache slot is flushed.
#[map(name = "SW_SOURCES")]
static SOURCES: LruPerCpuHashMap<Addr, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(defaults::SOURCES, 0);

#[map(name = "SW_ALLOW")]
static ALLOW: LpmTrie<Addr, u64> = LpmTrie::with_max_entries(defaults::ALLOW, 0);

#[map(name = "SW_ALLOW_FILT")]
static ALLOW_FILTER: Array<u64> = Array::with_max_entries(swarmwall_maps::FILTER_WORDS, 0);

#[map(name = "SW_EXACT")]
static EXACT: HashMap<Addr, u32> = HashMap::with_max_entries(defaults::EXACT, 0);

#[map(name = "SW_PREFIX")]
static PREFIX: LpmTrie<Addr, u32> = LpmTrie::with_max_entries(defaults::PREFIX, 0);

#[map(name = "SW_PREFIX_FILT")]
static PREFIX_FILTER: Array<u64> = Array::with_max_entries(swarmwall_maps::FILTER_WORDS, 0);

#[map(name = "SW_RULES")]
static RULES: Array<Rule> = Array::with_max_entries(defaults::RULES, 0);

#[map(name = "SW_RULE_HITS")]
static RULE_HITS: PerCpuArray<RuleHits> = PerCpuArray::with_max_entries(defaults::RULES, 0);

#[map(name = "SW_CLOCK")]
static CLOCK: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SW_L7_EVENTS")]
static L7_EVENTS: RingBuf = RingBuf::with_byte_size(defaults::L7_RING, 0);

#[map(name = "SW_L7_BUDGET")]
static L7_BUDGET: PerCpuArray<L7Budget> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SW_L7_META")]
static L7_META: PerCpuArray<L7Meta> = PerCpuArray::with_max_entries(1, 0);

// One value per flow, not per CPU: a continuation segment may be steered to another CPU than
// the first. Only the sampling program (TLS-port segments with payload) touches it.
#[map(name = "SW_HELLO")]
static HELLO: LruHashMap<HelloKey, HelloFlow> =
    LruHashMap::with_max_entries(defaults::HELLO_FLOWS, 0);

#[map(name = "SW_JUMP")]
static JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "SW_SRC_CACHE")]
static SRC_CACHE: PerCpuArray<SourceSlot> = PerCpuArray::with_max_entries(defaults::SRC_CACHE, 0);

/// The data-plane program.
#[xdp]
pub fn swarmwall(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (stat, action) = match parse(&ctx) {
        Ok(pkt) => {
            let verdict = decide(&pkt, len);
            // Only what reaches the server is worth a look: a blocked source's requests are not.
            if verdict.1 == xdp_action::XDP_PASS
                && pkt.proto == 6
                && pkt.has_port
                && let Some(kind) = l7_kind(pkt.dst_port)
                && hand_over(&pkt, kind)
            {
                record(verdict.0);
                // SAFETY: a tail call either runs the sampling program (which returns
                // XDP_PASS) or returns here if the slot is empty.
                unsafe { JUMP.tail_call(&ctx, JUMP_L7) };
                return xdp_action::XDP_PASS;
            }
            verdict
        }
        Err(stat) => (stat, xdp_action::XDP_PASS),
    };
    record(stat);
    action
}

/// The cost floor for the benchmarks: does nothing but pass.
#[xdp]
pub fn swarmwall_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Counts the packet as seen and under its verdict slot: the one exit every path goes through.
#[inline(always)]
fn record(stat: Stat) {
    bump(&[Stat::Seen, stat]);
}

/// Adds one to each named slot of this CPU's global counters (one map lookup for all).
#[inline(always)]
fn bump<const N: usize>(stats: &[Stat; N]) {
    if let Some(p) = STATS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array: valid for the program's run
        // and written by no one else meanwhile.
        let counters = unsafe { &mut (*p).counters };
        for stat in stats {
            let i = *stat as usize;
            if i < STAT_COUNT {
                counters[i] += 1;
            }
        }
    }
}

/// A rule decision: the slot that decided and its action.
#[derive(Clone, Copy)]
struct Hit {
    slot: u32,
    action: u8,
}

#[inline(always)]
fn decide(pkt: &Packet, len: u64) -> (Stat, u32) {
    let default = Config::new();
    let cfg = CONFIG.get(0).unwrap_or(&default);
    let mut now = 0u64;
    let idx = src_hash(&pkt.src, cfg.hash_seed) & cfg.cache_mask;
    let Some(slot) = SRC_CACHE.get_ptr_mut(idx) else {
        // Unreachable with a consistent config; still decide, counting straight into the LRU.
        let mut local = SourceSlot::default();
        fill(&mut local, pkt, cfg.rules_gen);
        let verdict = verdict(&mut local, pkt, len, cfg.mode == MODE_OBSERVE, &mut now);
        flush(&local);
        return verdict;
    };
    // SAFETY: this CPU's element of a per-CPU array: valid for the whole run, and nothing else
    // writes it meanwhile (XDP runs with preemption disabled).
    let slot = unsafe { &mut *slot };
    let same = addr_words(&slot.addr) == addr_words(&pkt.src);
    if slot.generation != cfg.rules_gen || !same || cfg.flags & FLAG_CACHE_OFF != 0 {
        if !same || cfg.flags & FLAG_CACHE_OFF != 0 {
            if slot.counters.packets != 0 {
                flush(slot);
            }
            slot.addr = pkt.src;
            slot.counters = SourceCounters::default();
        }
        fill(slot, pkt, cfg.rules_gen);
    }
    verdict(slot, pkt, len, cfg.mode == MODE_OBSERVE, &mut now)
}

/// Does the allow, exact and prefix lookups for the slot's source and tags them with `gen`.
#[inline(always)]
fn fill(slot: &mut SourceSlot, pkt: &Packet, generation: u32) {
    slot.flags = 0;
    if filter_has(&ALLOW_FILTER, &pkt.src) && ALLOW.get(Key::new(128, pkt.src)).is_some() {
        slot.flags = SLOT_ALLOWED;
    }
    // SAFETY: the value is a plain u32, copied out at once; userspace replaces entries whole.
    slot.exact_head = match unsafe { EXACT.get(pkt.src) } {
        Some(h) => *h,
        None => NO_RULE,
    };
    slot.prefix_head = NO_RULE;
    if filter_has(&PREFIX_FILTER, &pkt.src)
        && let Some(h) = PREFIX.get(Key::new(128, pkt.src))
    {
        slot.prefix_head = *h;
    }
    slot.generation = generation;
}

/// Decides from the slot's lookups and counts the packet in the slot and on the deciding rule.
#[inline(always)]
fn verdict(
    slot: &mut SourceSlot,
    pkt: &Packet,
    len: u64,
    observe: bool,
    now: &mut u64,
) -> (Stat, u32) {
    let (stat, action) = if slot.flags & SLOT_ALLOWED != 0 {
        (Stat::Allowed, xdp_action::XDP_PASS)
    } else {
        rules_verdict(slot.exact_head, slot.prefix_head, pkt, len, observe, now)
    };
    let c = &mut slot.counters;
    let t = clock(now);
    if c.first_seen_ns == 0 {
        c.first_seen_ns = t;
    }
    c.packets += 1;
    c.bytes += len;
    c.last_seen_ns = t;
    if action == xdp_action::XDP_DROP {
        c.dropped += 1;
    }
    (stat, action)
}

#[inline(always)]
fn rules_verdict(
    exact_head: u32,
    prefix_head: u32,
    pkt: &Packet,
    len: u64,
    observe: bool,
    now: &mut u64,
) -> (Stat, u32) {
    let mut pending: Option<Hit> = None;
    if exact_head != NO_RULE
        && let Some(hit) = walk(exact_head, pkt, now)
    {
        let drop = hit.action == ACTION_DROP && !observe;
        count_hit(hit.slot, len, drop);
        if drop {
            return (Stat::DroppedExact, xdp_action::XDP_DROP);
        }
        pending = Some(hit);
    }
    if prefix_head != NO_RULE
        && let Some(hit) = walk(prefix_head, pkt, now)
    {
        let drop = hit.action == ACTION_DROP && !observe;
        // An exact observe rule already counted; a prefix drop still overrides it.
        if pending.is_none() || hit.action == ACTION_DROP {
            count_hit(hit.slot, len, drop);
        }
        if drop {
            return (Stat::DroppedPrefix, xdp_action::XDP_DROP);
        }
        if pending.is_none() {
            pending = Some(hit);
        }
    }
    match pending {
        Some(_) => (Stat::Observed, xdp_action::XDP_PASS),
        None => (Stat::Passed, xdp_action::XDP_PASS),
    }
}

/// True if the presence filter has the bit for `addr`: a prefix might cover it.
#[inline(always)]
fn filter_has(filter: &Array<u64>, addr: &Addr) -> bool {
    let bit = filter_bit(addr);
    match filter.get(bit >> 6) {
        Some(word) => (*word >> (bit & 63)) & 1 == 1,
        None => false,
    }
}

/// Walks a rule chain and returns the deciding rule: the first live drop rule whose scope
/// matches, else the first matching observe rule.
#[inline(always)]
fn walk(head: u32, pkt: &Packet, now: &mut u64) -> Option<Hit> {
    let mut slot = head;
    let mut observe: Option<Hit> = None;
    for _ in 0..MAX_CHAIN {
        if slot == NO_RULE {
            break;
        }
        let rule = RULES.get(slot)?;
        if rule.expires_ns != 0 && clock(now) >= rule.expires_ns {
            slot = rule.next;
            continue;
        }
        if scope_matches(rule, pkt) {
            if rule.action == ACTION_DROP {
                return Some(Hit {
                    slot,
                    action: ACTION_DROP,
                });
            }
            if rule.action == ACTION_OBSERVE && observe.is_none() {
                observe = Some(Hit {
                    slot,
                    action: ACTION_OBSERVE,
                });
            }
        }
        slot = rule.next;
    }
    observe
}

#[inline(always)]
fn scope_matches(rule: &Rule, pkt: &Packet) -> bool {
    let f = rule.scope_flags;
    if f == 0 {
        return true;
    }
    if f & SCOPE_PROTO != 0 && rule.scope_proto != pkt.proto {
        return false;
    }
    if f & SCOPE_PORT != 0 && (!pkt.has_port || rule.scope_port != pkt.dst_port) {
        return false;
    }
    if f & SCOPE_DST != 0 && addr_words(&rule.scope_dst) != addr_words(&pkt.dst) {
        return false;
    }
    true
}

/// The coarse monotonic clock, read at most once per packet and only when needed; see
/// [`ClockCache`] for why it goes through jiffies.
#[inline(always)]
fn clock(now: &mut u64) -> u64 {
    if *now == 0 {
        // SAFETY: helpers with no arguments and no side effects.
        let j = unsafe { bpf_jiffies64() };
        *now = match CLOCK.get_ptr_mut(0) {
            Some(c) => {
                // SAFETY: this CPU's element of a per-CPU array, no concurrent writer.
                let c = unsafe { &mut *c };
                if c.jiffies != j || c.ns == 0 {
                    c.jiffies = j;
                    // SAFETY: as above.
                    c.ns = unsafe { bpf_ktime_get_coarse_ns() };
                }
                c.ns
            }
            // SAFETY: as above.
            None => unsafe { bpf_ktime_get_coarse_ns() },
        };
    }
    *now
}

#[inline(always)]
fn count_hit(slot: u32, len: u64, dropped: bool) {
    if let Some(h) = RULE_HITS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array, valid for the run, no concurrent writer.
        unsafe {
            (*h).packets += 1;
            (*h).bytes += len;
            if dropped {
                (*h).dropped_packets += 1;
                (*h).dropped_bytes += len;
            }
        }
    }
}

/// The first four bytes of a payload, read as a little-endian u32, for each method we sample.
const METHODS: [u32; 9] = [
    u32::from_le_bytes(*b"GET "),
    u32::from_le_bytes(*b"POST"),
    u32::from_le_bytes(*b"HEAD"),
    u32::from_le_bytes(*b"PUT "),
    u32::from_le_bytes(*b"DELE"),
    u32::from_le_bytes(*b"OPTI"),
    u32::from_le_bytes(*b"PATC"),
    u32::from_le_bytes(*b"CONN"),
    u32::from_le_bytes(*b"TRAC"),
];

/// The L7 kind of traffic to `port`, if that port is sampled.
#[inline(always)]
fn l7_kind(port: u16) -> Option<u8> {
    let cfg = CONFIG.get(0)?;
    if cfg.l7_rate == 0 {
        return None;
    }
    let h = &cfg.http_ports;
    let t = &cfg.tls_ports;
    if port == h[0] || port == h[1] || port == h[2] || port == h[3] {
        Some(L7_HTTP)
    } else if port == t[0] || port == t[1] {
        Some(L7_TLS)
    } else {
        None
    }
}

/// Leaves what the sampling program needs in this CPU's hand-over slot.
#[inline(always)]
fn hand_over(pkt: &Packet, kind: u8) -> bool {
    let Some(m) = L7_META.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's element of a per-CPU array, no concurrent writer.
    unsafe {
        (*m).src = pkt.src;
        (*m).dst = pkt.dst;
        (*m).src_port = pkt.src_port;
        (*m).dst_port = pkt.dst_port;
        (*m).l4_off = pkt.l4_off;
        (*m).kind = kind;
        (*m)._pad = 0;
    }
    true
}

/// The sampling program, reached by tail call from the data plane for a passed TCP segment to a
/// sampled port: copies its first bytes into the L7 ring buffer if it starts an HTTP request
/// (or a TLS ClientHello), within the per-CPU event budget. A hello longer than its segment
/// (a post-quantum key share does that) is copied whole, up to [`HELLO_MAX`] bytes in records
/// of [`L7_SNAP`], and its flow remembered in [`HELLO`] so that the next segments in sequence
/// are copied too (at most [`HELLO_SEGS`] of them). Always passes the packet.
#[xdp]
pub fn swarmwall_l7(ctx: XdpContext) -> u32 {
    if let Some(m) = L7_META.get(0) {
        let m = *m;
        sample(&ctx, &m);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn sample(ctx: &XdpContext, m: &L7Meta) {
    let kind = m.kind;
    // The fixed-offset headers first: checked after the TCP header's, LLVM would fold their
    // bounds checks away (implied for it, not for the verifier).
    let Some(ip_end) = ip_end(ctx) else {
        return;
    };
    let Some(tcp) = tcp_header(ctx, m) else {
        return;
    };
    let off = tcp.payload_off;
    let in_ip = ip_end.saturating_sub(off);
    let in_frame = ctx.data_end().saturating_sub(ctx.data() + off);
    // The payload up to the end of the IP packet, so the Ethernet padding after a short segment
    // (a bare ACK) does not count.
    let len = if in_ip < in_frame { in_ip } else { in_frame };
    if len == 0 {
        // A bare ACK (whatever Ethernet padding follows it).
        return;
    }
    // Whether the segment starts a request or hello; and, for TLS, whether it starts some other
    // record (change cipher spec, alert, application data: the bulk of a client's segments),
    // which no hello continues, so it needs no flow lookup. A handshake record that starts no
    // hello may be the next record of one split over several (RFC 8446 §5.1), so it is looked
    // up.
    let (starts, record) = match header::<8>(ctx, off) {
        Some(head) => {
            // SAFETY: bytes 0..6 lie within the checked 8 bytes.
            let (word, b5) = unsafe { (field::<u32>(head, 0), field::<u8>(head, 5)) };
            if kind == L7_HTTP {
                (METHODS.contains(&word), false)
            } else {
                let (rtype, major, minor) = (word & 0xff, (word >> 8) & 0xff, (word >> 16) & 0xff);
                // Handshake record, TLS 1.x, handshake type ClientHello.
                let hello = rtype == 0x16 && major == 3 && b5 == 1;
                (
                    hello,
                    (0x14..=0x17).contains(&rtype) && rtype != 0x16 && major == 3 && minor <= 4,
                )
            }
        }
        None => (false, false),
    };
    if !starts {
        if kind == L7_TLS && !record {
            continuation(ctx, m, &tcp, len);
        }
        return;
    }
    let mut now = 0;
    let t = clock(&mut now);
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    let Some(b) = L7_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's element of a per-CPU array, no concurrent writer.
    let b = unsafe { &mut *b };
    const ONE: u64 = 1_000_000_000;
    let rate = cfg.l7_rate as u64;
    // Tokens are scaled by 1e9: elapsed ns times events/s; at most one second's worth.
    let elapsed = t.saturating_sub(b.last_ns).min(ONE);
    b.tokens = (b.tokens + elapsed * rate).min(rate * ONE);
    b.last_ns = t;
    if b.tokens < ONE {
        record_extra(Stat::L7Skipped);
        return;
    }
    // One token per request or hello: its continuation segments ride on this admission.
    b.tokens -= ONE;
    if kind == L7_HTTP {
        let n = if len > L7_SNAP { L7_SNAP } else { len };
        if emit(ctx, m, off, n, 0, 0, L7_FLAG_END, t) {
            record_extra(Stat::L7Sampled);
        }
        return;
    }
    let Some(head) = header::<9>(ctx, off) else {
        return;
    };
    // SAFETY: bytes 3..5 (the record length, big-endian) and 6..9 (the handshake message's
    // 24-bit length) lie within the checked 9 bytes.
    let (body, msg) = unsafe {
        (
            u16::from_be(field::<u16>(head, 3)) as usize,
            ((field::<u8>(head, 6) as usize) << 16)
                | (u16::from_be(field::<u16>(head, 7)) as usize),
        )
    };
    let record = body + 5;
    // A message longer than its record goes on in the next records: how many bytes they take
    // is only known as they come, so offer the most a hello may take and let the reader stop
    // at the message's end.
    let total = if record > HELLO_MAX || msg + 4 > body {
        HELLO_MAX
    } else {
        record
    };
    let n = if len > total { total } else { len };
    let mut flags = L7_FLAG_END;
    if n < total {
        let flow = HelloFlow {
            ts_ns: t,
            next_seq: tcp.seq.wrapping_add(n as u32),
            got: n as u16,
            total: total as u16,
            segs: 0,
            _pad: [0; 7],
        };
        // Remembered before the records go out, so that the last one can say whether more come.
        if HELLO.insert(hello_key(m), flow, 0).is_ok() {
            flags = 0;
            record_extra(Stat::L7HelloTracked);
        }
    }
    if emit(ctx, m, off, n, 0, total, flags, t) {
        record_extra(Stat::L7Sampled);
    }
}

/// A TLS-port segment that starts nothing: if its flow's hello is being followed and the segment
/// is the next one in sequence, copies its share of the hello. Retransmissions (an old sequence
/// number) and segments past a lost one are ignored; a flow silent for [`HELLO_TIMEOUT_NS`] is
/// forgotten.
#[inline(always)]
fn continuation(ctx: &XdpContext, m: &L7Meta, tcp: &Tcp, len: usize) {
    let key = hello_key(m);
    let Some(f) = HELLO.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a value of a (non-per-CPU) hash map, valid while the program runs (RCU). Another
    // CPU may update the same flow at once; the worst case is one segment copied twice or not
    // at all, which the reader's reassembly tolerates.
    let f = unsafe { &mut *f };
    let mut now = 0;
    let t = clock(&mut now);
    if t.saturating_sub(f.ts_ns) > HELLO_TIMEOUT_NS {
        let _ = HELLO.remove(key);
        return;
    }
    let (seq, off) = (tcp.seq, tcp.payload_off);
    if seq != f.next_seq {
        return;
    }
    let got = f.got as usize;
    let total = f.total as usize;
    if got >= total || total > HELLO_MAX {
        let _ = HELLO.remove(key);
        return;
    }
    let want = total - got;
    let n = if len > want { want } else { len };
    f.got = (got + n) as u16;
    f.next_seq = seq.wrapping_add(n as u32);
    f.segs += 1;
    f.ts_ns = t;
    let done = got + n >= total || f.segs >= HELLO_SEGS;
    let mut flags = L7_FLAG_CONT;
    if done {
        flags |= L7_FLAG_END;
        let _ = HELLO.remove(key);
    }
    if emit(ctx, m, off, n, got, total, flags, t) {
        record_extra(Stat::L7HelloContinued);
    }
}

/// The flow of the segment the data plane handed over.
#[inline(always)]
fn hello_key(m: &L7Meta) -> HelloKey {
    HelloKey {
        src: m.src,
        dst: m.dst,
        src_port: m.src_port,
        dst_port: m.dst_port,
        _pad: 0,
    }
}

/// What the sampling program reads from the TCP header.
struct Tcp {
    /// Sequence number, host byte order.
    seq: u32,
    /// Offset of the payload in the frame, below 16 KiB.
    payload_off: usize,
}

/// The handed-over segment's TCP header.
#[inline(always)]
fn tcp_header(ctx: &XdpContext, m: &L7Meta) -> Option<Tcp> {
    // Bounded for the verifier (a range check on pkt + off needs off + size below 64 KiB); no
    // XDP frame has its payload further in than this.
    if m.l4_off > 8192 {
        return None;
    }
    let l4 = (m.l4_off & 0x3fff) as usize;
    let h = header::<20>(ctx, l4)?;
    // SAFETY: bytes 4..8 and 12 lie within the checked 20 bytes.
    let (seq, doff) = unsafe { (field::<u32>(h, 4), field::<u8>(h, 12)) };
    Some(Tcp {
        seq: u32::from_be(seq),
        payload_off: l4 + ((doff >> 4) as usize) * 4,
    })
}

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Where the IP packet ends in the frame. The IP header is found again here (Ethernet, up to
/// two VLAN tags) rather than handed over, to keep the parser of every packet as it was.
#[inline(always)]
fn ip_end(ctx: &XdpContext) -> Option<usize> {
    let mut l3 = 14;
    let eth = header::<14>(ctx, 0)?;
    // SAFETY: bytes 12..14 of the checked 14-byte header.
    let mut proto = u16::from_be(unsafe { field::<u16>(eth, 12) });
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag = header::<4>(ctx, l3)?;
        // SAFETY: bytes 2..4 of the checked 4-byte tag.
        proto = u16::from_be(unsafe { field::<u16>(tag, 2) });
        l3 += 4;
    }
    let h = header::<8>(ctx, l3)?;
    // SAFETY: bytes 0..6 lie within the checked 8 bytes.
    let (vers, v4_total, v6_payload) = unsafe {
        (
            field::<u8>(h, 0) >> 4,
            field::<u16>(h, 2),
            field::<u16>(h, 4),
        )
    };
    Some(if vers == 4 {
        l3 + u16::from_be(v4_total) as usize
    } else {
        l3 + 40 + u16::from_be(v6_payload) as usize
    })
}

/// Copies `n` payload bytes from `off` into the ring as records of at most [`L7_SNAP`] bytes,
/// the first at `offset` of the payload's stream; the last record carries `flags`, the others
/// `flags` without [`L7_FLAG_END`]. False if a record could not be written (counted).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit(
    ctx: &XdpContext,
    m: &L7Meta,
    off: usize,
    n: usize,
    offset: usize,
    total: usize,
    flags: u8,
    t: u64,
) -> bool {
    for i in 0..HELLO_CHUNKS {
        let start = i * L7_SNAP;
        if start >= n {
            break;
        }
        let left = n - start;
        let len = if left > L7_SNAP { L7_SNAP } else { left } as u32;
        // In 1..=L7_SNAP by construction, which the verifier can see (LLVM folds a plain
        // `len == 0` check away); equal to len for every len in 1..=L7_SNAP.
        let len = (len.wrapping_sub(1) & (L7_SNAP as u32 - 1)) + 1;
        let last = left <= L7_SNAP;
        let Some(mut entry) = L7_EVENTS.reserve::<L7Event>(0) else {
            record_extra(Stat::L7Lost);
            return false;
        };
        let ev = entry.as_mut_ptr();
        // SAFETY: `ev` points at a reserved ring buffer record of size_of::<L7Event>() bytes;
        // every field is written before submit; the copy stays within `data` (1 <= len <=
        // L7_SNAP) and the helper checks the frame's bounds itself.
        unsafe {
            (*ev).ts_ns = t;
            (*ev).src = m.src;
            (*ev).dst = m.dst;
            (*ev).src_port = m.src_port;
            (*ev).dst_port = m.dst_port;
            (*ev).kind = m.kind;
            (*ev).flags = if last { flags } else { flags & !L7_FLAG_END };
            (*ev).len = len as u16;
            (*ev).offset = ((offset + start) & 0xffff) as u16;
            (*ev).total = (total & 0xffff) as u16;
            (*ev)._pad = 0;
            let at = ((off + start) & 0xffff) as u32;
            let r = bpf_xdp_load_bytes(ctx.ctx, at, (*ev).data.as_mut_ptr().cast(), len);
            if r != 0 {
                entry.discard(0);
                return false;
            }
        }
        // Waking the reader for every record would cost more than the sample; it polls often
        // enough by itself, and is woken when a backlog builds.
        let wake = if L7_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= defaults::L7_WAKE_BYTES as u64 {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        entry.submit(wake as u64);
    }
    true
}

/// Adds a slot's counts to the source's LRU entry (creating it if needed).
#[inline(always)]
fn flush(slot: &SourceSlot) {
    let d = &slot.counters;
    if let Some(c) = SOURCES.get_ptr_mut(slot.addr) {
        // SAFETY: this CPU's value of a per-CPU hash entry, valid while the program runs (RCU).
        // Were the LRU to recycle the entry meanwhile, the worst case is one misattributed count.
        unsafe {
            (*c).packets += d.packets;
            (*c).bytes += d.bytes;
            (*c).dropped += d.dropped;
            if (*c).first_seen_ns == 0 {
                (*c).first_seen_ns = d.first_seen_ns;
            }
            (*c).last_seen_ns = d.last_seen_ns;
        }
        return;
    }
    if SOURCES.insert(slot.addr, *d, 0).is_err() {
        record_extra(Stat::SourceInsertFailed);
    }
}

/// Counts a detail slot without counting the packet as seen again.
#[inline(always)]
fn record_extra(stat: Stat) {
    bump(&[stat]);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
