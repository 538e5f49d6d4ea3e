//! swarmwall's XDP data plane: count every packet per source, drop listed sources and prefixes.
//!
//! Order of decisions, cheapest first, and why:
//! 1. parse (bounded, every access checked); a packet whose source is unknown passes;
//! 2. the allow list wins over everything (LPM walk only when its presence filter says a prefix
//!    could cover the source);
//! 3. exact-address rules (one hash lookup): a drop here returns at once, before any per-source
//!    counting, so a flood from a blocked address costs one lookup and one per-CPU counter;
//! 4. prefix rules (LPM walk behind a presence filter);
//! 5. per-source counting in the LRU per-CPU hash, for everything that was not an exact drop.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use swarmwall_maps::{
    ACTION_DROP, ACTION_OBSERVE, Addr, Config, GlobalStats, MAX_CHAIN, MODE_OBSERVE, NO_RULE, Rule,
    RuleHits, SCOPE_DST, SCOPE_PORT, SCOPE_PROTO, STAT_COUNT, SourceCounters, Stat, defaults,
    filter_bit,
};

use crate::parse::{Packet, parse};

#[map(name = "SW_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "SW_STATS")]
static STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);

// Per-CPU LRU lists: no shared list lock on the per-packet path.
#[map(name = "SW_SOURCES")]
static SOURCES: LruPerCpuHashMap<Addr, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(defaults::SOURCES, BPF_F_NO_COMMON_LRU);

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

/// The data-plane program.
#[xdp]
pub fn swarmwall(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (stat, action) = match parse(&ctx) {
        Ok(pkt) => decide(&pkt, len),
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
    if let Some(stats) = STATS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array: valid for the program's run
        // and written by no one else meanwhile.
        let counters = unsafe { &mut (*stats).counters };
        counters[Stat::Seen as usize] += 1;
        let i = stat as usize;
        if i < STAT_COUNT {
            counters[i] += 1;
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
    let mut now = 0u64;
    if filter_has(&ALLOW_FILTER, &pkt.src) && ALLOW.get(Key::new(128, pkt.src)).is_some() {
        count_source(pkt, len, false, &mut now);
        return (Stat::Allowed, xdp_action::XDP_PASS);
    }

    let observe = observing();
    let mut pending: Option<Hit> = None;

    // SAFETY: the value is a plain u32 copied out at once; userspace replaces entries whole.
    if let Some(head) = unsafe { EXACT.get(pkt.src) } {
        let head = *head;
        if let Some(hit) = walk(head, pkt, &mut now) {
            let drop = hit.action == ACTION_DROP && !observe;
            count_hit(hit.slot, len, drop);
            if drop {
                // Decided before counting: the rule's hits are this source's drop count.
                return (Stat::DroppedExact, xdp_action::XDP_DROP);
            }
            pending = Some(hit);
        }
    }

    if filter_has(&PREFIX_FILTER, &pkt.src)
        && let Some(head) = PREFIX.get(Key::new(128, pkt.src))
    {
        let head = *head;
        if let Some(hit) = walk(head, pkt, &mut now) {
            // An exact observe rule already counted; a prefix drop still overrides it.
            let drop = hit.action == ACTION_DROP && !observe;
            if pending.is_none() || hit.action == ACTION_DROP {
                count_hit(hit.slot, len, drop);
            }
            if drop {
                count_source(pkt, len, true, &mut now);
                return (Stat::DroppedPrefix, xdp_action::XDP_DROP);
            }
            if pending.is_none() {
                pending = Some(hit);
            }
        }
    }

    count_source(pkt, len, false, &mut now);
    match pending {
        Some(_) => (Stat::Observed, xdp_action::XDP_PASS),
        None => (Stat::Passed, xdp_action::XDP_PASS),
    }
}

#[inline(always)]
fn observing() -> bool {
    match CONFIG.get(0) {
        Some(c) => c.mode == MODE_OBSERVE,
        None => false,
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
    if f & SCOPE_DST != 0 && rule.scope_dst != pkt.dst {
        return false;
    }
    true
}

/// The coarse monotonic clock, read at most once per packet and only when needed.
#[inline(always)]
fn clock(now: &mut u64) -> u64 {
    if *now == 0 {
        // SAFETY: a helper with no arguments and no side effects.
        *now = unsafe { bpf_ktime_get_coarse_ns() };
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

#[inline(always)]
fn count_source(pkt: &Packet, len: u64, dropped: bool, now: &mut u64) {
    let t = clock(now);
    if let Some(c) = SOURCES.get_ptr_mut(pkt.src) {
        // SAFETY: this CPU's value of a per-CPU hash entry, valid while the program runs (RCU).
        // Were the LRU to recycle the entry meanwhile, the worst case is one misattributed count.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
            (*c).dropped += dropped as u64;
            (*c).last_seen_ns = t;
        }
        return;
    }
    let fresh = SourceCounters {
        packets: 1,
        bytes: len,
        dropped: dropped as u64,
        first_seen_ns: t,
        last_seen_ns: t,
    };
    if SOURCES.insert(pkt.src, fresh, 0).is_err() {
        record_extra(Stat::SourceInsertFailed);
    }
}

/// Counts a detail slot without counting the packet as seen again.
#[inline(always)]
fn record_extra(stat: Stat) {
    if let Some(stats) = STATS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let counters = unsafe { &mut (*stats).counters };
        let i = stat as usize;
        if i < STAT_COUNT {
            counters[i] += 1;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
