//! Reassembly of TLS ClientHellos from the kernel's ring records.
//!
//! The kernel copies a hello in records of at most [`L7_SNAP`] bytes: several for its first
//! segment, more for the continuation segments it follows (see `SW_HELLO` in the data plane).
//! This puts them back together per flow (addresses and ports), so the TLS parser sees the
//! whole hello — the SNI of a post-quantum browser hello sits past its first 1.5 KB.
//!
//! A client may split its hello over several TLS records (RFC 8446 §5.1; anti-censorship tools
//! do, to hide the name): the kernel then copies up to [`HELLO_MAX`] bytes rather than the first
//! record's length, and the reassembly follows the records in what came
//! ([`tls::hello_extent`]), handing the hello on as soon as its handshake message is complete.
//!
//! Bounded: a hello holds at most [`HELLO_MAX`] bytes, waits at most [`Limits::timeout_ns`] for
//! its remaining records, and all waiting hellos together hold at most [`Limits::max_bytes`]; a
//! new hello over that cap pushes the oldest out. A hello that times out or is pushed out is
//! still handed on with the bytes it has: the connection happened, even if its name is lost.

use std::collections::{HashMap, VecDeque};

use swarmwall_maps::{Addr, HELLO_MAX, L7_FLAG_END, L7_SNAP, L7_TLS, L7Event};

use crate::l7::tls::{self, Extent};

/// How long and how much the reassembly may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A hello whose records have not all come within this long (ns) is handed on as it is.
    pub timeout_ns: u64,
    /// Bytes all waiting hellos may hold together (buffers and bookkeeping).
    pub max_bytes: usize,
}

impl Default for Limits {
    /// Twice the kernel's own wait for a continuation segment, and room for about 500 hellos.
    fn default() -> Self {
        Self {
            timeout_ns: 2 * swarmwall_maps::HELLO_TIMEOUT_NS,
            max_bytes: 1 << 20,
        }
    }
}

/// What the reassembly did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloCounters {
    /// Hellos put together whole from more than one record.
    pub reassembled: u64,
    /// Hellos handed on incomplete because their remaining records did not come in time.
    pub timed_out: u64,
    /// Hellos handed on incomplete because the memory cap needed their room (or a new hello
    /// on the same flow replaced them).
    pub dropped: u64,
    /// Hellos the kernel stopped following before their end (its segment limit), handed on
    /// with what came.
    pub truncated: u64,
    /// Records of a hello nobody was waiting for (it had timed out or been dropped).
    pub stray: u64,
}

/// One payload as the parsers take it: a whole HTTP request head, or a reassembled hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Kernel time of the (first) record, ns.
    pub ts_ns: u64,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// `L7_HTTP` or `L7_TLS`.
    pub kind: u8,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Accounted per waiting hello besides its buffer (the map entry, the order queue's slot).
const ENTRY_OVERHEAD: usize = 160;
/// Separate byte ranges one hello may hold (records out of order); more are ignored.
const MAX_RANGES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    src: Addr,
    dst: Addr,
    src_port: u16,
    dst_port: u16,
}

struct Pending {
    id: u64,
    opened_ns: u64,
    ts_ns: u64,
    buf: Vec<u8>,
    /// Filled byte ranges of `buf`, sorted, disjoint, not adjacent.
    ranges: Vec<(usize, usize)>,
    records: u32,
}

impl Pending {
    /// Bytes filled from the start without a gap.
    fn prefix(&self) -> usize {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    fn cost(&self) -> usize {
        self.buf.len() + ENTRY_OVERHEAD
    }

    /// Copies `data` in at `offset` (clipped to the buffer); false if it would need too many
    /// ranges.
    fn fill(&mut self, offset: usize, data: &[u8]) -> bool {
        let start = offset.min(self.buf.len());
        let end = (offset + data.len()).min(self.buf.len());
        if start >= end {
            return true;
        }
        let mut ranges = self.ranges.clone();
        ranges.push((start, end));
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if merged.len() > MAX_RANGES {
            return false;
        }
        self.buf[start..end].copy_from_slice(&data[..end - start]);
        self.ranges = merged;
        self.records += 1;
        true
    }
}

/// Per-flow reassembly of hello records; HTTP records pass straight through.
pub struct HelloAssembler {
    limits: Limits,
    pending: HashMap<FlowKey, Pending>,
    /// Waiting hellos oldest first, by id; ids no longer pending are skipped lazily.
    order: VecDeque<(FlowKey, u64)>,
    bytes: usize,
    next_id: u64,
    counters: HelloCounters,
}

impl HelloAssembler {
    /// An empty reassembly within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_id: 0,
            counters: HelloCounters::default(),
        }
    }

    /// What it did so far.
    pub fn counters(&self) -> HelloCounters {
        self.counters
    }

    /// Hellos waiting for more records.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the waiting hellos hold (as counted against [`Limits::max_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes one ring record received at `now_ns` (any monotonic clock, the one
    /// [`HelloAssembler::expire`] gets), handing every payload it completes to `out`.
    pub fn push(&mut self, ev: &L7Event, now_ns: u64, out: &mut dyn FnMut(Payload)) {
        let data = &ev.data[..(ev.len as usize).min(L7_SNAP)];
        let key = FlowKey {
            src: ev.src,
            dst: ev.dst,
            src_port: ev.src_port,
            dst_port: ev.dst_port,
        };
        let end = ev.flags & L7_FLAG_END != 0;
        if ev.kind != L7_TLS {
            out(payload(ev, data.to_vec()));
            return;
        }
        let total = (ev.total as usize).min(HELLO_MAX);
        // A retransmitted first segment repeats records the hello already has: fill them in
        // again (a no-op) rather than start over and count the handshake twice.
        let again = ev.offset == 0
            && self.pending.get(&key).is_some_and(|p| {
                p.buf.len() == total && p.prefix() >= data.len() && p.buf[..data.len()] == *data
            });
        if ev.offset == 0 && !again {
            if let Some(old) = self.take(&key) {
                self.counters.dropped += 1;
                out(stale(&key, old));
            }
            if end || data.len() >= total {
                // Whole in one record: the common case of a small hello.
                out(payload(ev, data.to_vec()));
                return;
            }
            if let Extent::Whole(n) = tls::hello_extent(data) {
                // Several small TLS records, all in the first ring record.
                out(payload(ev, data[..n].to_vec()));
                return;
            }
            self.open(key, ev, total, data, now_ns, out);
            return;
        }
        let Some(p) = self.pending.get_mut(&key) else {
            self.counters.stray += 1;
            return;
        };
        p.fill(ev.offset as usize, data);
        let prefix = p.prefix();
        if let Extent::Whole(n) = tls::hello_extent(&p.buf[..prefix])
            && n < p.buf.len()
        {
            // A hello in several records, complete before the bytes the kernel offered to
            // copy: the rest is the flow's next records, not the hello.
            let mut p = self.take(&key).expect("pending, looked up above");
            p.buf.truncate(n);
            p.ranges = vec![(0, n)];
            self.counters.reassembled += 1;
            out(stale(&key, p));
        } else if prefix >= p.buf.len() {
            let p = self.take(&key).expect("pending, looked up above");
            if p.records > 1 {
                self.counters.reassembled += 1;
            }
            out(stale(&key, p));
        } else if end {
            // The kernel follows no further; what is missing will not come.
            let p = self.take(&key).expect("pending, looked up above");
            self.counters.truncated += 1;
            out(stale(&key, p));
        }
    }

    /// Hands on, as they are, the hellos that have waited [`Limits::timeout_ns`] by `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut dyn FnMut(Payload)) {
        while let Some(&(key, id)) = self.order.front() {
            match self.pending.get(&key) {
                Some(p) if p.id == id => {
                    if now_ns.saturating_sub(p.opened_ns) < self.limits.timeout_ns {
                        break;
                    }
                    let p = self.take(&key).expect("pending, looked up above");
                    self.counters.timed_out += 1;
                    out(stale(&key, p));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn open(
        &mut self,
        key: FlowKey,
        ev: &L7Event,
        total: usize,
        data: &[u8],
        now_ns: u64,
        out: &mut dyn FnMut(Payload),
    ) {
        let cost = total + ENTRY_OVERHEAD;
        // Make room, oldest first: a flood of first segments only ever holds the cap.
        while self.bytes + cost > self.limits.max_bytes {
            let Some(oldest) = self.oldest() else {
                break;
            };
            let p = self.take(&oldest).expect("oldest is pending");
            self.counters.dropped += 1;
            out(stale(&oldest, p));
        }
        if self.bytes + cost > self.limits.max_bytes {
            // A cap smaller than one hello: hand it on as it is.
            self.counters.dropped += 1;
            out(payload(ev, data.to_vec()));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut p = Pending {
            id,
            opened_ns: now_ns,
            ts_ns: ev.ts_ns,
            buf: vec![0; total],
            ranges: Vec::new(),
            records: 0,
        };
        p.fill(0, data);
        self.bytes += p.cost();
        self.pending.insert(key, p);
        self.order.push_back((key, id));
        // Ids of hellos completed out of order stay queued until they reach the front; keep
        // the queue within a constant factor of what is pending.
        if self.order.len() > 4 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order
                .retain(|(k, id)| pending.get(k).is_some_and(|p| p.id == *id));
        }
    }

    fn oldest(&mut self) -> Option<FlowKey> {
        while let Some(&(key, id)) = self.order.front() {
            if self.pending.get(&key).is_some_and(|p| p.id == id) {
                return Some(key);
            }
            self.order.pop_front();
        }
        None
    }

    fn take(&mut self, key: &FlowKey) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.bytes -= p.cost();
        Some(p)
    }
}

fn payload(ev: &L7Event, data: Vec<u8>) -> Payload {
    Payload {
        ts_ns: ev.ts_ns,
        src: ev.src,
        dst: ev.dst,
        src_port: ev.src_port,
        dst_port: ev.dst_port,
        kind: ev.kind,
        data,
    }
}

/// A waiting hello's bytes up to its first gap.
fn stale(key: &FlowKey, mut p: Pending) -> Payload {
    let n = p.prefix();
    p.buf.truncate(n);
    Payload {
        ts_ns: p.ts_ns,
        src: key.src,
        dst: key.dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        kind: L7_TLS,
        data: p.buf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmwall_maps::{L7_FLAG_CONT, L7_HTTP, v4_mapped};

    fn record(src: u8, hello: &[u8], offset: usize, len: usize, flags: u8) -> L7Event {
        let mut data = [0; L7_SNAP];
        data[..len].copy_from_slice(&hello[offset..offset + len]);
        L7Event {
            ts_ns: 7,
            src: v4_mapped([192, 0, 2, src]),
            dst: v4_mapped([203, 0, 113, 10]),
            src_port: 40000,
            dst_port: 443,
            kind: L7_TLS,
            flags,
            len: len as u16,
            offset: offset as u16,
            total: hello.len().min(HELLO_MAX) as u16,
            _pad: 0,
            data,
        }
    }

    /// The records the kernel sends for `hello` cut into segments of `seg` bytes (the first
    /// segment's records, then each continuation's, the last flagged END).
    fn records(src: u8, hello: &[u8], seg: usize) -> Vec<L7Event> {
        let total = hello.len().min(HELLO_MAX);
        let mut out = Vec::new();
        let mut at = 0;
        while at < total {
            let seg_end = (at + seg).min(total);
            let cont = if at == 0 { 0 } else { L7_FLAG_CONT };
            let mut off = at;
            while off < seg_end {
                let len = (seg_end - off).min(L7_SNAP);
                let end = if off + len == total { L7_FLAG_END } else { 0 };
                out.push(record(src, hello, off, len, cont | end));
                off += len;
            }
            at = seg_end;
        }
        out
    }

    fn hello(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn run(a: &mut HelloAssembler, evs: &[L7Event], now: u64) -> Vec<Payload> {
        let mut out = Vec::new();
        for e in evs {
            a.push(e, now, &mut |p| out.push(p));
        }
        out
    }

    #[test]
    fn a_hello_over_two_segments_comes_out_whole() {
        let h = hello(1850);
        let mut a = HelloAssembler::new(Limits::default());
        let evs = records(1, &h, 1448);
        assert_eq!(evs.len(), 4);
        let out = run(&mut a, &evs, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, h);
        assert_eq!(out[0].kind, L7_TLS);
        assert_eq!(a.counters().reassembled, 1);
        assert_eq!((a.pending(), a.bytes()), (0, 0));
    }

    #[test]
    fn records_out_of_order_and_duplicated_still_assemble() {
        let h = hello(1850);
        let mut evs = records(1, &h, 1448);
        evs.swap(1, 2);
        let dup = evs[1];
        evs.insert(2, dup);
        let mut a = HelloAssembler::new(Limits::default());
        let out = run(&mut a, &evs, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, h);
    }

    #[test]
    fn a_retransmitted_first_segment_is_not_a_second_hello() {
        let h = hello(1850);
        let evs = records(1, &h, 1448);
        let mut again = evs[..3].to_vec();
        again.extend_from_slice(&evs);
        let mut a = HelloAssembler::new(Limits::default());
        let out = run(&mut a, &again, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, h);
        assert_eq!(a.counters().dropped, 0);
    }

    #[test]
    fn small_hellos_and_http_pass_straight_through() {
        let h = hello(300);
        let mut a = HelloAssembler::new(Limits::default());
        let mut http = records(2, &h, 1448)[0];
        http.kind = L7_HTTP;
        http.total = 0;
        let out = run(&mut a, &[records(1, &h, 1448)[0], http], 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, h);
        assert_eq!(out[1].kind, L7_HTTP);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_missing_continuation_times_out_and_frees_its_entry() {
        let h = hello(1850);
        let evs = records(1, &h, 1448);
        let mut a = HelloAssembler::new(Limits::default());
        assert!(run(&mut a, &evs[..3], 1_000).is_empty());
        assert_eq!(a.pending(), 1);
        assert!(a.bytes() > 1850);
        let mut out = Vec::new();
        a.expire(1_000 + Limits::default().timeout_ns - 1, &mut |p| {
            out.push(p)
        });
        assert!(out.is_empty());
        a.expire(1_000 + Limits::default().timeout_ns, &mut |p| out.push(p));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, &h[..1448]);
        assert_eq!(a.counters().timed_out, 1);
        assert_eq!((a.pending(), a.bytes()), (0, 0));
        // The continuation arriving after all is a stray, not a new hello.
        assert!(run(&mut a, &evs[3..], 5_000_000_000).is_empty());
        assert_eq!(a.counters().stray, 1);
    }

    #[test]
    fn a_flood_of_first_segments_stays_within_the_cap() {
        let h = hello(1850);
        let limits = Limits {
            timeout_ns: u64::MAX,
            max_bytes: 64 * 1024,
        };
        let mut a = HelloAssembler::new(limits);
        let mut handed = 0;
        for i in 0..20_000u32 {
            let mut first = records(1, &h, 1448)[0];
            first.src_port = i as u16;
            first.src[12..].copy_from_slice(&i.to_be_bytes());
            a.push(&first, u64::from(i), &mut |_| handed += 1);
            assert!(a.bytes() <= limits.max_bytes);
        }
        let held = a.pending() as u64;
        assert!(held > 10, "{held}");
        assert_eq!(a.counters().dropped, 20_000 - held);
        assert_eq!(handed, 20_000 - held);
        // The queue of ids stays bounded too.
        assert!(a.order.len() <= 4 * a.pending() + 64);
    }

    #[test]
    fn a_hello_the_kernel_stops_following_is_handed_on_truncated() {
        let h = hello(1850);
        let mut evs = records(1, &h, 1448);
        // The kernel's segment limit: the last record it sends is flagged END short of total.
        evs.truncate(3);
        evs[2].flags |= L7_FLAG_END;
        let mut a = HelloAssembler::new(Limits::default());
        let out = run(&mut a, &evs, 0);
        assert_eq!(
            out.len(),
            1,
            "an END on the first segment's last record means no more"
        );
        assert_eq!(out[0].data.len(), 1448);
        assert_eq!(a.counters().truncated, 1);
        assert_eq!(a.pending(), 0);
    }

    /// A real hello's handshake message re-framed into TLS records of `chunk` bytes.
    fn in_records(chunk: usize) -> Vec<u8> {
        let one = crate::l7::hello::build::browser("split.example");
        crate::l7::hello::build::records(&one[5..], chunk)
    }

    /// The kernel's records of a hello split over TLS records: it offers [`HELLO_MAX`] bytes
    /// (it cannot tell where the message ends), in segments of `seg` bytes.
    fn split_records(hello: &[u8], seg: usize) -> Vec<L7Event> {
        let mut padded = hello.to_vec();
        // What follows the hello on the flow (the client's next records), never the hello's.
        padded.resize(HELLO_MAX, 0x17);
        let mut evs = records(3, &padded, seg);
        for e in &mut evs {
            e.total = HELLO_MAX as u16;
        }
        evs
    }

    #[test]
    fn a_hello_over_several_tls_records_ends_with_its_message() {
        for chunk in [100, 600, 1000] {
            let h = in_records(chunk);
            assert!(h.len() < HELLO_MAX);
            let mut a = HelloAssembler::new(Limits::default());
            let out = run(&mut a, &split_records(&h, 1448), 0);
            assert_eq!(out.len(), 1, "{chunk}");
            assert_eq!(
                out[0].data, h,
                "{chunk}: the hello exactly, not what follows"
            );
            let ev = &crate::l7::from_payload(
                L7_TLS,
                0,
                "192.0.2.3".parse().unwrap(),
                "203.0.113.10".parse().unwrap(),
                443,
                &out[0].data,
            )[0];
            assert_eq!(ev.host.as_deref(), Some("split.example"), "{chunk}");
            assert!(ev.ja4.is_some(), "{chunk}");
            assert_eq!((a.pending(), a.bytes()), (0, 0));
        }
        // Small records all inside the first ring record: handed on at once.
        let msg = crate::l7::hello::build::message(
            0x0303,
            &[0x1301],
            Some(&[crate::l7::hello::build::sni("a.example")]),
        );
        let h = crate::l7::hello::build::records(&msg, 40);
        assert!(h.len() < L7_SNAP);
        let mut a = HelloAssembler::new(Limits::default());
        let out = run(&mut a, &split_records(&h, 1448)[..1], 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, h);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_new_hello_on_the_same_flow_replaces_the_old() {
        let old = hello(1900);
        let h: Vec<u8> = hello(1850).iter().map(|b| b ^ 0x5a).collect();
        let evs = records(1, &h, 1448);
        let mut a = HelloAssembler::new(Limits::default());
        run(&mut a, &records(1, &old, 1448)[..2], 0);
        let out = run(&mut a, &evs, 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data.len(), 1024);
        assert_eq!(out[1].data, h);
        assert_eq!(a.counters().dropped, 1);
    }
}
