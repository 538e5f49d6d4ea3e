//! pcap captures (Ethernet link type): the HTTP requests in their TCP segments, with the
//! capture's own timestamps.

use std::{fs::File, io::BufReader, net::IpAddr, path::Path, time::Duration};

use pcap_file::{DataLink, PcapError, pcap::PcapReader};
use pnet_packet::{
    Packet as _,
    ethernet::{EtherTypes, EthernetPacket},
    ip::IpNextHeaderProtocols,
    ipv4::Ipv4Packet,
    ipv6::Ipv6Packet,
    tcp::TcpPacket,
};

use super::{EventSource, Polled, SourceCounters, SourceError};
use crate::l7::{RequestEvent, http, http_events};

/// Packets read per [`EventSource::poll`].
const BATCH: usize = 4096;

/// A pcap file as an [`EventSource`]. A truncated or damaged tail ends it with a warning; the
/// packets before it are used.
pub struct PcapSource {
    name: String,
    reader: PcapReader<BufReader<File>>,
    counters: SourceCounters,
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
        for _ in 0..BATCH {
            if self.done {
                break;
            }
            let packets = self.counters.read;
            match self.reader.next_packet() {
                None => self.done = true,
                Some(Ok(p)) => {
                    self.counters.read += 1;
                    let ts = p.timestamp.as_nanos() as u64;
                    // Captures from several interfaces can interleave slightly; keep time
                    // monotonic for the detector.
                    self.last_ts = self.last_ts.max(ts);
                    let events = requests_in_frame(self.last_ts, &p.data);
                    if events.is_empty() {
                        self.counters.unparsed += 1;
                    }
                    for ev in events {
                        self.counters.requests += 1;
                        out(ev);
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
        Ok(if self.done { Polled::End } else { Polled::More })
    }

    fn counters(&self) -> SourceCounters {
        self.counters
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

/// The HTTP requests in one Ethernet frame, if it is a TCP segment starting one.
pub fn requests_in_frame(ts_ns: u64, frame: &[u8]) -> Vec<RequestEvent> {
    let Some(eth) = EthernetPacket::new(frame) else {
        return Vec::new();
    };
    let (mut ethertype, mut l3) = (eth.get_ethertype(), eth.payload());
    if ethertype == EtherTypes::Vlan && l3.len() >= 4 {
        ethertype = pnet_packet::ethernet::EtherType(u16::from_be_bytes([l3[2], l3[3]]));
        l3 = &l3[4..];
    }
    let (src, dst, tcp): (IpAddr, IpAddr, Option<TcpPacket<'_>>) = match ethertype {
        EtherTypes::Ipv4 => {
            let Some(ip) = Ipv4Packet::new(l3) else {
                return Vec::new();
            };
            if ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp
                || ip.get_fragment_offset() != 0
            {
                return Vec::new();
            }
            let hl = (ip.get_header_length() as usize) * 4;
            let total = (ip.get_total_length() as usize).min(l3.len());
            let body = l3.get(hl..total).unwrap_or(&[]);
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                TcpPacket::new(body),
            )
        }
        EtherTypes::Ipv6 => {
            let Some(ip) = Ipv6Packet::new(l3) else {
                return Vec::new();
            };
            if ip.get_next_header() != IpNextHeaderProtocols::Tcp {
                return Vec::new();
            }
            let body = l3.get(40..).unwrap_or(&[]);
            let len = (ip.get_payload_length() as usize).min(body.len());
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                TcpPacket::new(&body[..len]),
            )
        }
        _ => return Vec::new(),
    };
    let Some(tcp) = tcp else { return Vec::new() };
    let payload = tcp.payload();
    if !http::starts_request(payload) {
        return Vec::new();
    }
    http_events(ts_ns, src, dst, tcp.get_destination(), payload)
}
