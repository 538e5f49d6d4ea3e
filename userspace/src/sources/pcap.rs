//! pcap captures (Ethernet link type): the HTTP requests and TLS ClientHellos in their TCP
//! segments, with the capture's own timestamps.
//!
//! A browser's hello (~1.8 KB with a post-quantum key share) spans two segments, and a client
//! may split it over several TLS records: [`TcpHellos`] follows each flow's segments, in
//! sequence, until the handshake message is whole ([`tls::hello_extent`]), bounded in bytes per
//! hello, segments per hello, capture time and memory, like the live reassembly
//! ([`super::hello`]) whose limits and counters it shares.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::BufReader,
    net::IpAddr,
    path::Path,
    time::Duration,
};

use pcap_file::{DataLink, PcapError, pcap::PcapReader};
use pnet_packet::{
    ethernet::{EtherTypes, EthernetPacket},
    ip::IpNextHeaderProtocols,
    ipv4::Ipv4Packet,
    ipv6::Ipv6Packet,
    tcp::TcpPacket,
};

use super::{
    EventSource, Polled, SourceCounters, SourceError,
    hello::{HelloCounters, Limits},
};
use crate::l7::{
    RequestEvent, http, http_events,
    tls::{self, Extent},
    tls_event,
};

/// Packets read per [`EventSource::poll`].
const BATCH: usize = 4096;

/// A pcap file as an [`EventSource`]. A truncated or damaged tail ends it with a warning; the
/// packets before it are used.
pub struct PcapSource {
    name: String,
    reader: PcapReader<BufReader<File>>,
    counters: SourceCounters,
    hellos: TcpHellos,
    last_ts: u64,
    warnings: Vec<String>,
    done: bool,
}

impl PcapSource {
    /// Opens `path`; a file that is not an Ethernet pcap is an error.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: name.clone(),
            source,
        })?;
        let reader = PcapReader::new(BufReader::new(file)).map_err(|e| SourceError::Format {
            path: name.clone(),
            why: e.to_string(),
        })?;
        if reader.header().datalink != DataLink::ETHERNET {
            return Err(SourceError::Format {
                path: name,
                why: format!(
                    "link type {:?}; only Ethernet captures are supported",
                    reader.header().datalink
                ),
            });
        }
        Ok(Self {
            name,
            reader,
            counters: SourceCounters::default(),
            hellos: TcpHellos::new(Limits::default()),
            last_ts: 0,
            warnings: Vec::new(),
            done: false,
        })
    }
}

impl EventSource for PcapSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(
        &mut self,
        _timeout: Duration,
        out: &mut dyn FnMut(RequestEvent),
    ) -> Result<Polled, SourceError> {
        let counters = &mut self.counters;
        let mut hand = |ev: RequestEvent| {
            counters.requests += 1;
            out(ev);
        };
        for _ in 0..BATCH {
            if self.done {
                break;
            }
            let packets = counters.read;
            match self.reader.next_packet() {
                None => self.done = true,
                Some(Ok(p)) => {
                    counters.read += 1;
                    let ts = p.timestamp.as_nanos() as u64;
                    // Captures from several interfaces can interleave slightly; keep time
                    // monotonic for the detector.
                    self.last_ts = self.last_ts.max(ts);
                    self.hellos.expire(self.last_ts, &mut hand);
                    let Some(seg) = tcp_segment(&p.data) else {
                        counters.unparsed += 1;
                        continue;
                    };
                    let events = if http::starts_request(seg.payload) {
                        http_events(self.last_ts, seg.src, seg.dst, seg.dst_port, seg.payload)
                    } else {
                        Vec::new()
                    };
                    // A segment is used if it holds requests or belongs to a hello.
                    let used =
                        !events.is_empty() || self.hellos.segment(self.last_ts, &seg, &mut hand);
                    if !used {
                        counters.unparsed += 1;
                    }
                    for ev in events {
                        hand(ev);
                    }
                }
                Some(Err(PcapError::IncompleteBuffer)) => {
                    self.warnings.push(format!(
                        "{} ends in the middle of a packet (truncated capture); analyzed the {packets} packets before it",
                        self.name
                    ));
                    self.done = true;
                }
                Some(Err(e)) => {
                    self.warnings.push(format!(
                        "{} is damaged or truncated after {packets} packets ({e}); analyzed the packets before it",
                        self.name
                    ));
                    self.done = true;
                }
            }
        }
        if self.done {
            // The capture is over: what is still waiting will get no more segments.
            self.hellos.expire(u64::MAX, &mut hand);
        }
        Ok(if self.done { Polled::End } else { Polled::More })
    }

    fn counters(&self) -> SourceCounters {
        self.counters
    }

    fn hellos(&self) -> HelloCounters {
        self.hellos.counters
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

/// The HTTP requests in one Ethernet frame, if it is a TCP segment starting one.
pub fn requests_in_frame(ts_ns: u64, frame: &[u8]) -> Vec<RequestEvent> {
    match tcp_segment(frame) {
        Some(seg) if http::starts_request(seg.payload) => {
            http_events(ts_ns, seg.src, seg.dst, seg.dst_port, seg.payload)
        }
        _ => Vec::new(),
    }
}

/// A TCP segment's flow, sequence number and payload.
struct Segment<'a> {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The TCP segment in an Ethernet frame (one VLAN tag allowed; IPv4 fragments other than the
/// first carry no TCP header and give nothing).
fn tcp_segment(frame: &[u8]) -> Option<Segment<'_>> {
    let eth = EthernetPacket::new(frame)?;
    // The payload as a slice of `frame`, so that the segment can borrow from the frame.
    let (mut ethertype, mut l3) = (eth.get_ethertype(), frame.get(14..)?);
    if ethertype == EtherTypes::Vlan && l3.len() >= 4 {
        ethertype = pnet_packet::ethernet::EtherType(u16::from_be_bytes([l3[2], l3[3]]));
        l3 = &l3[4..];
    }
    let (src, dst, body): (IpAddr, IpAddr, &[u8]) = match ethertype {
        EtherTypes::Ipv4 => {
            let ip = Ipv4Packet::new(l3)?;
            if ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp
                || ip.get_fragment_offset() != 0
            {
                return None;
            }
            let hl = (ip.get_header_length() as usize) * 4;
            let total = (ip.get_total_length() as usize).min(l3.len());
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                l3.get(hl..total).unwrap_or(&[]),
            )
        }
        EtherTypes::Ipv6 => {
            let ip = Ipv6Packet::new(l3)?;
            if ip.get_next_header() != IpNextHeaderProtocols::Tcp {
                return None;
            }
            let body = l3.get(40..).unwrap_or(&[]);
            let len = (ip.get_payload_length() as usize).min(body.len());
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                &body[..len],
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new(body)?;
    // The payload borrowed from the frame, not from the parsed packet.
    let off = (usize::from(tcp.get_data_offset()) * 4).min(body.len());
    Some(Segment {
        src,
        dst,
        src_port: tcp.get_source(),
        dst_port: tcp.get_destination(),
        seq: tcp.get_sequence(),
        payload: &body[off..],
    })
}

/// Most bytes one hello may take over its records; real ones are under 2 KB, the protocol
/// allows a 16 KiB record and more.
const STREAM_HELLO_MAX: usize = 16 * 1024;
/// Most segments one hello is followed over.
const STREAM_HELLO_SEGMENTS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
}

struct Waiting {
    id: u64,
    ts_ns: u64,
    next_seq: u32,
    segments: u32,
    buf: Vec<u8>,
}

/// Per-flow reassembly of ClientHellos from a capture's TCP segments, in sequence order:
/// a segment with an older sequence number (a retransmission) is ignored, one past a gap
/// waits for the gap's retransmission. A hello that is not whole within
/// [`Limits::timeout_ns`] of capture time, or that needs the room of a newer one under
/// [`Limits::max_bytes`], is handed on with what it has: the connection happened.
struct TcpHellos {
    limits: Limits,
    pending: HashMap<Flow, Waiting>,
    /// Waiting hellos oldest first, by id; ids no longer pending are skipped lazily.
    order: VecDeque<(Flow, u64)>,
    bytes: usize,
    next_id: u64,
    counters: HelloCounters,
}

impl TcpHellos {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_id: 0,
            counters: HelloCounters::default(),
        }
    }

    /// Takes one segment seen at `ts_ns`; whether it started or continued a hello. Every hello
    /// it completes goes to `out` as its request event.
    fn segment(
        &mut self,
        ts_ns: u64,
        seg: &Segment<'_>,
        out: &mut dyn FnMut(RequestEvent),
    ) -> bool {
        let flow = Flow {
            src: seg.src,
            dst: seg.dst,
            src_port: seg.src_port,
            dst_port: seg.dst_port,
        };
        if seg.payload.is_empty() {
            return false;
        }
        let starts = tls::hello_extent(seg.payload) != Extent::NotHello;
        if let Some(w) = self.pending.get_mut(&flow) {
            let ahead = seg.seq.wrapping_sub(w.next_seq);
            if ahead == 0 {
                let take = seg.payload.len().min(STREAM_HELLO_MAX - w.buf.len());
                if !self.make_room(take, Some(flow), out) {
                    // No room for more even with every other hello handed on.
                    let w = self.take(&flow).expect("pending, looked up above");
                    self.counters.dropped += 1;
                    out(event(&flow, &w));
                    return true;
                }
                let w = self
                    .pending
                    .get_mut(&flow)
                    .expect("pending, looked up above");
                w.buf.extend_from_slice(&seg.payload[..take]);
                self.bytes += take;
                w.next_seq = w.next_seq.wrapping_add(take as u32);
                w.segments += 1;
                match tls::hello_extent(&w.buf) {
                    Extent::Whole(n) => {
                        let mut w = self.take(&flow).expect("pending, looked up above");
                        w.buf.truncate(n);
                        self.counters.reassembled += 1;
                        out(event(&flow, &w));
                    }
                    _ if w.buf.len() >= STREAM_HELLO_MAX || w.segments >= STREAM_HELLO_SEGMENTS => {
                        let w = self.take(&flow).expect("pending, looked up above");
                        self.counters.truncated += 1;
                        out(event(&flow, &w));
                    }
                    _ => {}
                }
                return true;
            }
            // Sequence numbers within half the space behind are retransmissions of what the
            // hello already has.
            if ahead > u32::MAX / 2 || !starts {
                return true;
            }
            // A new hello on the flow (a reused port): the old one is over.
            let old = self.take(&flow).expect("pending, looked up above");
            self.counters.dropped += 1;
            out(event(&flow, &old));
        }
        match tls::hello_extent(seg.payload) {
            Extent::NotHello => false,
            Extent::Whole(n) => {
                out(event_of(&flow, ts_ns, &seg.payload[..n]));
                true
            }
            Extent::More => {
                self.open(flow, ts_ns, seg, out);
                true
            }
        }
    }

    fn open(
        &mut self,
        flow: Flow,
        ts_ns: u64,
        seg: &Segment<'_>,
        out: &mut dyn FnMut(RequestEvent),
    ) {
        let data = &seg.payload[..seg.payload.len().min(STREAM_HELLO_MAX)];
        if !self.make_room(data.len() + ENTRY_OVERHEAD, None, out) {
            // A cap smaller than one hello: hand it on as it is.
            self.counters.dropped += 1;
            out(event_of(&flow, ts_ns, data));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let w = Waiting {
            id,
            ts_ns,
            next_seq: seg.seq.wrapping_add(data.len() as u32),
            segments: 1,
            buf: data.to_vec(),
        };
        self.bytes += w.buf.len() + ENTRY_OVERHEAD;
        self.pending.insert(flow, w);
        self.order.push_back((flow, id));
        if self.order.len() > 4 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order
                .retain(|(f, id)| pending.get(f).is_some_and(|w| w.id == *id));
        }
    }

    /// Hands on the oldest waiting hellos (but `keep`'s) until `need` more bytes fit under
    /// [`Limits::max_bytes`]; whether they do. A flood of first segments thus only ever
    /// pushes out hellos older than the one growing.
    fn make_room(
        &mut self,
        need: usize,
        keep: Option<Flow>,
        out: &mut dyn FnMut(RequestEvent),
    ) -> bool {
        while self.bytes + need > self.limits.max_bytes {
            // Drops the stale ids at the front, so the search below stops early.
            self.oldest();
            let pending = &self.pending;
            let victim = self
                .order
                .iter()
                .find(|(f, id)| Some(*f) != keep && pending.get(f).is_some_and(|w| w.id == *id))
                .map(|(f, _)| *f);
            let Some(victim) = victim else {
                return false;
            };
            let w = self.take(&victim).expect("found pending");
            self.counters.dropped += 1;
            out(event(&victim, &w));
        }
        true
    }

    /// Hands on, as they are, the hellos opened [`Limits::timeout_ns`] or longer before `now_ns`.
    fn expire(&mut self, now_ns: u64, out: &mut dyn FnMut(RequestEvent)) {
        while let Some(flow) = self.oldest() {
            let w = &self.pending[&flow];
            if now_ns.saturating_sub(w.ts_ns) < self.limits.timeout_ns {
                break;
            }
            let w = self.take(&flow).expect("oldest is pending");
            self.counters.timed_out += 1;
            out(event(&flow, &w));
        }
    }

    fn oldest(&mut self) -> Option<Flow> {
        while let Some(&(flow, id)) = self.order.front() {
            if self.pending.get(&flow).is_some_and(|w| w.id == id) {
                return Some(flow);
            }
            self.order.pop_front();
        }
        None
    }

    fn take(&mut self, flow: &Flow) -> Option<Waiting> {
        let w = self.pending.remove(flow)?;
        self.bytes -= w.buf.len() + ENTRY_OVERHEAD;
        Some(w)
    }
}

/// Accounted per waiting hello besides its bytes.
const ENTRY_OVERHEAD: usize = 160;

fn event(flow: &Flow, w: &Waiting) -> RequestEvent {
    event_of(flow, w.ts_ns, &w.buf)
}

fn event_of(flow: &Flow, ts_ns: u64, hello: &[u8]) -> RequestEvent {
    tls_event(ts_ns, flow.src, flow.dst, flow.dst_port, hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::hello::build::browser;

    fn seg<'a>(src: u32, seq: u32, payload: &'a [u8]) -> Segment<'a> {
        Segment {
            src: IpAddr::V4(src.into()),
            dst: "203.0.113.10".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            seq,
            payload,
        }
    }

    #[test]
    fn a_missing_continuation_times_out_in_capture_time() {
        let h = browser("shop.example");
        let mut a = TcpHellos::new(Limits::default());
        let mut out = Vec::new();
        assert!(a.segment(1_000, &seg(1, 7, &h[..1448]), &mut |e| out.push(e)));
        assert!(out.is_empty());
        a.expire(1_000 + Limits::default().timeout_ns - 1, &mut |e| {
            out.push(e)
        });
        assert!(out.is_empty());
        a.expire(1_000 + Limits::default().timeout_ns, &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ja4, None, "cut short: no fingerprint");
        assert_eq!(a.counters.timed_out, 1);
        assert_eq!((a.pending.len(), a.bytes), (0, 0));
        // The continuation after all: part of no hello.
        assert!(
            !a.segment(5_000_000_000, &seg(1, 7 + 1448, &h[1448..]), &mut |e| out
                .push(e))
        );
    }

    #[test]
    fn a_flood_of_first_segments_stays_within_the_cap_and_a_hello_completes() {
        let h = browser("shop.example");
        let limits = Limits {
            timeout_ns: u64::MAX,
            max_bytes: 64 * 1024,
        };
        let mut a = TcpHellos::new(limits);
        let mut out = 0;
        assert!(a.segment(0, &seg(0, 100, &h[..1448]), &mut |_| out += 1));
        for i in 1..5_000u32 {
            a.segment(u64::from(i), &seg(i, 0, &h[..1448]), &mut |_| out += 1);
            assert!(a.bytes <= limits.max_bytes);
        }
        assert!(a.pending.len() > 10);
        assert_eq!(out as usize + a.pending.len(), 5_000);
        assert!(a.order.len() <= 4 * a.pending.len() + 64);
        // The newest one completes, whole, with its JA4.
        let mut got = Vec::new();
        a.segment(9, &seg(4_999, 1448, &h[1448..]), &mut |e| got.push(e));
        assert_eq!(got.len(), 1);
        assert!(got[0].ja4.is_some());
        assert_eq!(got[0].host.as_deref(), Some("shop.example"));
    }
}
