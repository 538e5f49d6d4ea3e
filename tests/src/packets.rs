//! Ethernet frames for tests, built with pnet: the shapes the XDP parser must handle.
//!
//! [`Frame`] covers what the data plane's parser distinguishes — up to two VLAN tags, IPv4 options
//! and fragments, IPv6 extension-header chains and fragments, TCP and UDP — with correct IPv4
//! header, UDP and TCP checksums, so a frame that XDP passes is also accepted by the kernel stack
//! behind it. Misuse of the builder (an IPv4 option on an IPv6 frame, a length the header cannot
//! encode) is a bug in the test, so it panics at the call that caused it.
//!
//! ```
//! use std::net::IpAddr;
//! use swarmwall_integration::packets::Frame;
//!
//! let src: IpAddr = "198.51.100.7".parse().unwrap();
//! let dst: IpAddr = "203.0.113.1".parse().unwrap();
//! let frame = Frame::udp(src, dst, 40000, 53)
//!     .vlan(0x88a8, 100) // outer (service) tag
//!     .vlan(0x8100, 200) // inner (customer) tag
//!     .payload(b"hello")
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 4 + 20 + 8 + 5);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::{
    packet::{
        MutablePacket as _,
        arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket},
        ethernet::{EtherType, EtherTypes, MutableEthernetPacket},
        ip::{IpNextHeaderProtocol, IpNextHeaderProtocols},
        ipv4::{self, Ipv4Flags, MutableIpv4Packet},
        ipv6::MutableIpv6Packet,
        tcp::{self, MutableTcpPacket, TcpFlags},
        udp::{self, MutableUdpPacket},
        vlan::{ClassOfService, MutableVlanPacket},
    },
    util::MacAddr,
};

/// Source MAC of built frames: locally administered (bit 1 of the first octet), so it can never
/// collide with a real NIC's address.
pub const SRC_MAC: [u8; 6] = [0x02, 0x53, 0x57, 0x00, 0x00, 0x01];

/// Destination MAC of built frames, locally administered like [`SRC_MAC`].
pub const DST_MAC: [u8; 6] = [0x02, 0x53, 0x57, 0x00, 0x00, 0x02];

/// IPv6 Hop-by-Hop Options header (next-header value).
pub const IPV6_HOP_BY_HOP: u8 = 0;
/// IPv6 Routing header (next-header value).
pub const IPV6_ROUTING: u8 = 43;
/// IPv6 Fragment header (next-header value).
pub const IPV6_FRAGMENT: u8 = 44;
/// IPv6 Destination Options header (next-header value).
pub const IPV6_DEST_OPTS: u8 = 60;

/// The IPv4 identification (and IPv6 fragment id) of built fragments: fixed, so a test can
/// build the pieces of one datagram with separate builders.
pub const FRAGMENT_ID: u16 = 0x5357;

/// Routing type 253 is reserved for experiments (RFC 4727): with Segments Left = 0 every stack
/// skips it, and no routing semantics (deprecated type 0, SRH type 4) get in the way.
const EXPERIMENTAL_ROUTING_TYPE: u8 = 253;

const ETHERNET_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_HEADER_LEN: usize = 20;
const IPV4_MAX_OPTIONS_LEN: usize = 40;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const TCP_HEADER_LEN: usize = 20;
const MAX_FRAGMENT_OFFSET: u16 = 0x1fff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Udp,
    Tcp { flags: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ipv6Ext {
    /// Hop-by-Hop, Routing or Destination Options, `len` bytes in all.
    Options {
        kind: u8,
        len: usize,
    },
    Fragment {
        offset_units: u16,
        more: bool,
    },
}

/// The TCP sequence number of a [`Frame`] unless [`Frame::tcp_seq`] says otherwise.
pub const DEFAULT_SEQ: u32 = 0x5357_0001;

/// A fluent builder for one Ethernet frame carrying UDP or TCP over IPv4 or IPv6.
///
/// Options apply in the order given where order matters (VLAN tags, IPv6 extension headers).
/// A fragment whose offset is not zero carries only the payload — like a real non-first
/// fragment, it has no UDP/TCP header (the data plane must not read ports from it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Frame does nothing until `.build()`"]
pub struct Frame {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    l4: L4,
    payload: Vec<u8>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(u16, u16)>,
    ipv4_options: Vec<u8>,
    ipv4_fragment: Option<(u16, bool)>,
    ipv6_exts: Vec<Ipv6Ext>,
    pad_to: usize,
    seq: u32,
}

impl Frame {
    /// A UDP datagram from `src:sport` to `dst:dport`.
    ///
    /// # Panics
    /// If `src` and `dst` are of different address families.
    #[track_caller]
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, sport, dport, L4::Udp)
    }

    /// A TCP segment from `src:sport` to `dst:dport`, with only the SYN flag set (see
    /// [`Frame::tcp_flags`] for others, e.g. PSH|ACK to carry an HTTP request).
    ///
    /// # Panics
    /// If `src` and `dst` are of different address families.
    #[track_caller]
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(
            src,
            dst,
            sport,
            dport,
            L4::Tcp {
                flags: TcpFlags::SYN,
            },
        )
    }

    #[track_caller]
    fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, l4: L4) -> Self {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source {src} and destination {dst} must be of one address family"
        );
        Self {
            src,
            dst,
            sport,
            dport,
            l4,
            payload: Vec::new(),
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_fragment: None,
            ipv6_exts: Vec::new(),
            pad_to: 0,
            seq: DEFAULT_SEQ,
        }
    }

    /// The transport payload (e.g. an HTTP request line for the L7 sampler).
    pub fn payload(mut self, payload: &[u8]) -> Self {
        payload.clone_into(&mut self.payload);
        self
    }

    /// Source and destination MACs, e.g. a veth pair's, so the receiving stack accepts the frame
    /// as addressed to it (the defaults are [`SRC_MAC`] and [`DST_MAC`]).
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Replaces the TCP flags (a [`TcpFlags`] bit set, e.g. `TcpFlags::PSH | TcpFlags::ACK`).
    ///
    /// # Panics
    /// On a UDP frame.
    #[track_caller]
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        match &mut self.l4 {
            L4::Tcp { flags: f } => *f = flags,
            L4::Udp => panic!("tcp_flags on a UDP frame"),
        }
        self
    }

    /// Sets the TCP sequence number (default [`DEFAULT_SEQ`]): a payload split over segments
    /// advances it by each segment's length.
    pub fn tcp_seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// Adds a VLAN tag with the given TPID (0x8100 for 802.1Q, 0x88a8 for an 802.1ad service tag)
    /// and VLAN id. Call twice for QinQ: the first call is the outer tag.
    ///
    /// # Panics
    /// If `vid` does not fit in 12 bits.
    #[track_caller]
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        assert!(vid <= 0x0fff, "VLAN id {vid} does not fit in 12 bits");
        self.vlans.push((tpid, vid));
        self
    }

    /// IPv4 options, as raw bytes; zero-padded (End of Options List) to a multiple of 4 bytes,
    /// with IHL set to match.
    ///
    /// # Panics
    /// On an IPv6 frame, or if the padded options exceed the 40 bytes IHL can describe.
    #[track_caller]
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        assert!(self.src.is_ipv4(), "ipv4_options on an IPv6 frame");
        let padded = options.len().div_ceil(4) * 4;
        assert!(
            padded <= IPV4_MAX_OPTIONS_LEN,
            "{} bytes of IPv4 options pad to {padded}; at most {IPV4_MAX_OPTIONS_LEN} fit",
            options.len()
        );
        self.ipv4_options = options.to_vec();
        self.ipv4_options.resize(padded, 0);
        self
    }

    /// Makes this an IPv4 fragment at `offset_units` × 8 bytes, with More Fragments set if `more`.
    /// The identification is [`FRAGMENT_ID`].
    ///
    /// # Panics
    /// On an IPv6 frame, or if the offset does not fit in 13 bits.
    #[track_caller]
    pub fn ipv4_fragment(mut self, offset_units: u16, more: bool) -> Self {
        assert!(self.src.is_ipv4(), "ipv4_fragment on an IPv6 frame");
        assert!(
            offset_units <= MAX_FRAGMENT_OFFSET,
            "fragment offset {offset_units} does not fit in 13 bits"
        );
        self.ipv4_fragment = Some((offset_units, more));
        self
    }

    /// Appends an IPv6 extension header of `len_bytes` bytes in all: kind 0 (Hop-by-Hop), 43
    /// (Routing, experimental type 253 with Segments Left 0) or 60 (Destination Options). Option
    /// headers are filled with options every stack skips (see [`IPV6_EXPERIMENTAL_OPTION`]), so
    /// the Linux stack behind XDP accepts them. Headers chain in
    /// call order; nothing enforces RFC 8200's recommended order, so a test can build odd chains.
    ///
    /// # Panics
    /// On an IPv4 frame, for another kind, or if `len_bytes` is not a multiple of 8 in 8..=2048.
    #[track_caller]
    pub fn ipv6_ext(mut self, next_header_kind: u8, len_bytes: usize) -> Self {
        assert!(self.src.is_ipv6(), "ipv6_ext on an IPv4 frame");
        assert!(
            matches!(
                next_header_kind,
                IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS
            ),
            "extension header kind {next_header_kind} is not 0, 43 or 60"
        );
        assert!(
            len_bytes.is_multiple_of(8) && (8..=2048).contains(&len_bytes),
            "extension header length {len_bytes} is not a multiple of 8 in 8..=2048"
        );
        self.ipv6_exts.push(Ipv6Ext::Options {
            kind: next_header_kind,
            len: len_bytes,
        });
        self
    }

    /// Appends an IPv6 Fragment header (offset `offset_units` × 8 bytes, M flag `more`, id
    /// [`FRAGMENT_ID`]) to the extension-header chain, in call order.
    ///
    /// # Panics
    /// On an IPv4 frame, or if the offset does not fit in 13 bits.
    #[track_caller]
    pub fn ipv6_fragment(mut self, offset_units: u16, more: bool) -> Self {
        assert!(self.src.is_ipv6(), "ipv6_fragment on an IPv4 frame");
        assert!(
            offset_units <= MAX_FRAGMENT_OFFSET,
            "fragment offset {offset_units} does not fit in 13 bits"
        );
        self.ipv6_exts
            .push(Ipv6Ext::Fragment { offset_units, more });
        self
    }

    /// Pads the frame with zero bytes to at least `len` bytes, as a NIC pads short frames to the
    /// 60-byte Ethernet minimum: the trailing bytes lie outside the IP packet's stated length.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// Whether this frame carries the transport header (it is not a non-first fragment).
    fn has_l4_header(&self) -> bool {
        let offset = match self.src {
            IpAddr::V4(_) => self.ipv4_fragment.map_or(0, |(offset, _)| offset),
            IpAddr::V6(_) => self
                .ipv6_exts
                .iter()
                .find_map(|ext| match ext {
                    Ipv6Ext::Fragment { offset_units, .. } => Some(*offset_units),
                    Ipv6Ext::Options { .. } => None,
                })
                .unwrap_or(0),
        };
        offset == 0
    }

    fn protocol(&self) -> IpNextHeaderProtocol {
        match self.l4 {
            L4::Udp => IpNextHeaderProtocols::Udp,
            L4::Tcp { .. } => IpNextHeaderProtocols::Tcp,
        }
    }

    /// The bytes after the IP header(s): transport header + payload, or only the payload for a
    /// non-first fragment. Checksums cover exactly what is present, which for a first fragment is
    /// not the whole datagram — good enough, since no test reassembles.
    fn transport(&self) -> Vec<u8> {
        if !self.has_l4_header() {
            return self.payload.clone();
        }
        match self.l4 {
            L4::Udp => self.udp_segment(),
            L4::Tcp { flags } => self.tcp_segment(flags),
        }
    }

    fn udp_segment(&self) -> Vec<u8> {
        let mut buf = vec![0; UDP_HEADER_LEN + self.payload.len()];
        let len = u16::try_from(buf.len()).expect("UDP datagram longer than 65535 bytes");
        let mut udp = MutableUdpPacket::new(&mut buf).expect("buffer sized for a UDP header");
        udp.set_source(self.sport);
        udp.set_destination(self.dport);
        udp.set_length(len);
        udp.set_payload(&self.payload);
        let sum = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => udp::ipv4_checksum(&udp.to_immutable(), &s, &d),
            (IpAddr::V6(s), IpAddr::V6(d)) => udp::ipv6_checksum(&udp.to_immutable(), &s, &d),
            _ => unreachable!("families checked in Frame::new"),
        };
        // In UDP a zero checksum means "none"; a computed zero is sent as all ones (RFC 768).
        udp.set_checksum(if sum == 0 { 0xffff } else { sum });
        buf
    }

    fn tcp_segment(&self, flags: u8) -> Vec<u8> {
        let mut buf = vec![0; TCP_HEADER_LEN + self.payload.len()];
        let mut tcp = MutableTcpPacket::new(&mut buf).expect("buffer sized for a TCP header");
        tcp.set_source(self.sport);
        tcp.set_destination(self.dport);
        tcp.set_sequence(self.seq);
        if flags & TcpFlags::ACK != 0 {
            tcp.set_acknowledgement(1);
        }
        tcp.set_data_offset((TCP_HEADER_LEN / 4) as u8);
        tcp.set_flags(flags);
        tcp.set_window(64240);
        tcp.set_payload(&self.payload);
        let sum = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&tcp.to_immutable(), &s, &d),
            (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&tcp.to_immutable(), &s, &d),
            _ => unreachable!("families checked in Frame::new"),
        };
        tcp.set_checksum(sum);
        buf
    }

    fn ipv4_packet(&self, src: Ipv4Addr, dst: Ipv4Addr, transport: &[u8]) -> Vec<u8> {
        let header_len = IPV4_HEADER_LEN + self.ipv4_options.len();
        let mut buf = vec![0; header_len + transport.len()];
        let total = u16::try_from(buf.len()).expect("IPv4 packet longer than 65535 bytes");
        buf[IPV4_HEADER_LEN..header_len].copy_from_slice(&self.ipv4_options);
        let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer sized for an IPv4 header");
        ip.set_version(4);
        ip.set_header_length((header_len / 4) as u8);
        ip.set_total_length(total);
        ip.set_ttl(64);
        ip.set_next_level_protocol(self.protocol());
        ip.set_source(src);
        ip.set_destination(dst);
        if let Some((offset, more)) = self.ipv4_fragment {
            ip.set_identification(FRAGMENT_ID);
            ip.set_flags(if more { Ipv4Flags::MoreFragments } else { 0 });
            ip.set_fragment_offset(offset);
        }
        ip.set_payload(transport);
        let sum = ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(sum);
        buf
    }

    fn ipv6_packet(&self, src: Ipv6Addr, dst: Ipv6Addr, transport: &[u8]) -> Vec<u8> {
        // Each header's next-header field names the one after it; the last names the transport.
        let kinds: Vec<u8> = self
            .ipv6_exts
            .iter()
            .map(|ext| match ext {
                Ipv6Ext::Options { kind, .. } => *kind,
                Ipv6Ext::Fragment { .. } => IPV6_FRAGMENT,
            })
            .chain([self.protocol().0])
            .collect();
        let mut exts = Vec::new();
        for (ext, &next) in self.ipv6_exts.iter().zip(&kinds[1..]) {
            exts.extend(ipv6_ext_bytes(*ext, next));
        }
        let payload_len = u16::try_from(exts.len() + transport.len())
            .expect("IPv6 payload longer than 65535 bytes");

        let mut buf = vec![0; IPV6_HEADER_LEN + exts.len() + transport.len()];
        let mut ip = MutableIpv6Packet::new(&mut buf).expect("buffer sized for an IPv6 header");
        ip.set_version(6);
        ip.set_payload_length(payload_len);
        ip.set_next_header(IpNextHeaderProtocol(kinds[0]));
        ip.set_hop_limit(64);
        ip.set_source(src);
        ip.set_destination(dst);
        let rest = ip.payload_mut();
        rest[..exts.len()].copy_from_slice(&exts);
        rest[exts.len()..].copy_from_slice(transport);
        buf
    }

    /// The finished frame.
    pub fn build(&self) -> Vec<u8> {
        let transport = self.transport();
        let (ethertype, ip) = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (EtherTypes::Ipv4, self.ipv4_packet(s, d, &transport))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                (EtherTypes::Ipv6, self.ipv6_packet(s, d, &transport))
            }
            _ => unreachable!("families checked in Frame::new"),
        };

        let tags_len = VLAN_TAG_LEN * self.vlans.len();
        let mut frame = vec![0; ETHERNET_HEADER_LEN + tags_len + ip.len()];
        // The Ethernet type field and each tag's type field name what follows them: the next
        // tag's TPID, and after the last tag, the IP version.
        let mut types = self.vlans.iter().map(|&(tpid, _)| EtherType(tpid));
        let first_type = types.next().unwrap_or(ethertype);
        let mut eth =
            MutableEthernetPacket::new(&mut frame).expect("buffer sized for an Ethernet header");
        eth.set_destination(MacAddr::from(self.dst_mac));
        eth.set_source(MacAddr::from(self.src_mac));
        eth.set_ethertype(first_type);
        let next_types: Vec<EtherType> = types.chain([ethertype]).collect();
        for (i, (&(_, vid), next)) in self.vlans.iter().zip(next_types).enumerate() {
            let at = ETHERNET_HEADER_LEN + i * VLAN_TAG_LEN;
            let mut tag = MutableVlanPacket::new(&mut frame[at..]).expect("buffer sized for a tag");
            tag.set_priority_code_point(ClassOfService(0));
            tag.set_drop_eligible_indicator(0);
            tag.set_vlan_identifier(vid);
            tag.set_ethertype(next);
        }
        frame[ETHERNET_HEADER_LEN + tags_len..].copy_from_slice(&ip);
        if frame.len() < self.pad_to {
            frame.resize(self.pad_to, 0);
        }
        frame
    }
}

/// One IPv6 extension header's bytes, with `next` as its next-header field.
fn ipv6_ext_bytes(ext: Ipv6Ext, next: u8) -> Vec<u8> {
    match ext {
        Ipv6Ext::Fragment { offset_units, more } => {
            let offset_flags = (offset_units << 3) | u16::from(more);
            let mut bytes = vec![next, 0];
            bytes.extend(offset_flags.to_be_bytes());
            bytes.extend(u32::from(FRAGMENT_ID).to_be_bytes());
            bytes
        }
        Ipv6Ext::Options { kind, len } => {
            // Hdr Ext Len counts 8-octet units beyond the first (RFC 8200 §4.3).
            let units = u8::try_from(len / 8 - 1).expect("length checked in ipv6_ext");
            let mut bytes = vec![next, units];
            if kind == IPV6_ROUTING {
                bytes.extend([EXPERIMENTAL_ROUTING_TYPE, 0]);
                bytes.resize(len, 0);
            } else {
                fill_options(&mut bytes, len);
            }
            bytes
        }
    }
}

/// An option type from RFC 4727's experimental range whose top bits (00) tell every stack to
/// skip it when unknown: filler that is not padding.
pub const IPV6_EXPERIMENTAL_OPTION: u8 = 0x1e;

/// Fills an options header up to `len` with options a real stack skips silently.
///
/// Padding alone will not do beyond 8 bytes: Linux rejects more than 7 consecutive bytes of
/// Pad1/PadN (RFC 8200 pads only for alignment), so long headers are filled with experimental
/// options of up to 255 data bytes and end with at most 7 bytes of padding. That stays within
/// Linux's default limit of 8 options per header (`max_dst_opts_number`/`max_hbh_opts_number`)
/// for any length up to 2048.
fn fill_options(bytes: &mut Vec<u8>, len: usize) {
    const PAD1: u8 = 0;
    const PADN: u8 = 1;
    const MAX_PADDING: usize = 7;
    while len - bytes.len() > MAX_PADDING {
        let room = len - bytes.len();
        // Whatever is left after this option is either another option's worth or ≤ 7 bytes.
        let data = (room - 2).min(usize::from(u8::MAX));
        bytes.extend([IPV6_EXPERIMENTAL_OPTION, data as u8]);
        bytes.resize(bytes.len() + data, 0);
    }
    match len - bytes.len() {
        0 => {}
        1 => bytes.push(PAD1),
        room => {
            bytes.extend([PADN, (room - 2) as u8]);
            bytes.resize(len, 0);
        }
    }
}

/// An ARP who-has request (198.51.100.1 at [`SRC_MAC`] asks for 198.51.100.2), broadcast: a
/// frame that is neither IPv4 nor IPv6, which the data plane must pass untouched.
pub fn arp_request() -> Vec<u8> {
    const ARP_LEN: usize = 28;
    let mut frame = vec![0; ETHERNET_HEADER_LEN + ARP_LEN];
    let mut eth =
        MutableEthernetPacket::new(&mut frame).expect("buffer sized for an Ethernet header");
    eth.set_destination(MacAddr::broadcast());
    eth.set_source(MacAddr::from(SRC_MAC));
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("buffer sized for ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(MacAddr::from(SRC_MAC));
    arp.set_sender_proto_addr(Ipv4Addr::new(198, 51, 100, 1));
    arp.set_target_hw_addr(MacAddr::zero());
    arp.set_target_proto_addr(Ipv4Addr::new(198, 51, 100, 2));
    frame
}

/// The first `len` bytes of `frame` (all of it if shorter): a packet cut short inside some header,
/// which the data plane must pass and count as unparsable, never read past.
pub fn truncate(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet::packet::{
        Packet as _,
        arp::ArpPacket,
        ethernet::EthernetPacket,
        ipv4::Ipv4Packet,
        ipv6::{ExtensionPacket, FragmentPacket, Ipv6Packet, RoutingPacket},
        tcp::TcpPacket,
        udp::UdpPacket,
        vlan::VlanPacket,
    };

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const A4: &str = "198.51.100.7";
    const B4: &str = "203.0.113.1";
    const A6: &str = "2001:db8::7";
    const B6: &str = "2001:db8:1::1";

    /// One's-complement sum over `data` (the Internet checksum's core); a correct header sums to
    /// 0xffff. Written independently of pnet so the test does not check pnet against itself.
    fn ones_sum(chunks: &[&[u8]]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += u32::from(word);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn pseudo_v4(ip: &Ipv4Packet, proto: u8, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(ip.get_source().octets());
        p.extend(ip.get_destination().octets());
        p.extend([0, proto]);
        p.extend((len as u16).to_be_bytes());
        p
    }

    fn pseudo_v6(ip: &Ipv6Packet, proto: u8, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(ip.get_source().octets());
        p.extend(ip.get_destination().octets());
        p.extend((len as u32).to_be_bytes());
        p.extend([0, 0, 0, proto]);
        p
    }

    #[test]
    fn udp_v4_parses_back_with_valid_checksums() {
        let frame = Frame::udp(addr(A4), addr(B4), 40000, 53)
            .payload(b"query")
            .build();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_source(), MacAddr::from(SRC_MAC));
        assert_eq!(eth.get_destination(), MacAddr::from(DST_MAC));
        assert_eq!(eth.get_ethertype(), EtherTypes::Ipv4);
        let ip = Ipv4Packet::new(eth.payload()).unwrap();
        assert_eq!(ip.get_version(), 4);
        assert_eq!(ip.get_header_length(), 5);
        assert_eq!(usize::from(ip.get_total_length()), eth.payload().len());
        assert_eq!(ip.get_source().to_string(), A4);
        assert_eq!(ip.get_destination().to_string(), B4);
        assert_eq!(ip.get_next_level_protocol(), IpNextHeaderProtocols::Udp);
        assert_eq!(
            ones_sum(&[&eth.payload()[..20]]),
            0xffff,
            "IPv4 header checksum"
        );
        let udp = UdpPacket::new(ip.payload()).unwrap();
        assert_eq!((udp.get_source(), udp.get_destination()), (40000, 53));
        assert_eq!(udp.get_length(), 8 + 5);
        assert_eq!(udp.payload(), b"query");
        let pseudo = pseudo_v4(&ip, 17, ip.payload().len());
        assert_eq!(ones_sum(&[&pseudo, ip.payload()]), 0xffff, "UDP checksum");
    }

    #[test]
    fn tcp_v6_parses_back_with_valid_checksum() {
        let frame = Frame::tcp(addr(A6), addr(B6), 50000, 80)
            .tcp_flags(TcpFlags::PSH | TcpFlags::ACK)
            .payload(b"GET / HTTP/1.1\r\n")
            .build();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_ethertype(), EtherTypes::Ipv6);
        let ip = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip.get_next_header(), IpNextHeaderProtocols::Tcp);
        assert_eq!(usize::from(ip.get_payload_length()), 20 + 16);
        let tcp = TcpPacket::new(ip.payload()).unwrap();
        assert_eq!((tcp.get_source(), tcp.get_destination()), (50000, 80));
        assert_eq!(tcp.get_flags(), TcpFlags::PSH | TcpFlags::ACK);
        assert_eq!(tcp.get_data_offset(), 5);
        assert_eq!(tcp.payload(), b"GET / HTTP/1.1\r\n");
        let pseudo = pseudo_v6(&ip, 6, ip.payload().len());
        assert_eq!(ones_sum(&[&pseudo, ip.payload()]), 0xffff, "TCP checksum");
    }

    #[test]
    fn tcp_defaults_to_syn_and_v4_checksum_is_valid() {
        let frame = Frame::tcp(addr(A4), addr(B4), 1234, 443).build();
        let ip = Ipv4Packet::new(&frame[14..]).unwrap();
        let tcp = TcpPacket::new(ip.payload()).unwrap();
        assert_eq!(tcp.get_flags(), TcpFlags::SYN);
        let pseudo = pseudo_v4(&ip, 6, ip.payload().len());
        assert_eq!(ones_sum(&[&pseudo, ip.payload()]), 0xffff);
    }

    #[test]
    fn qinq_tags_chain_outer_first() {
        let frame = Frame::udp(addr(A4), addr(B4), 1, 2)
            .vlan(0x88a8, 100)
            .vlan(0x8100, 200)
            .build();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_ethertype(), EtherType(0x88a8));
        let outer = VlanPacket::new(eth.payload()).unwrap();
        assert_eq!(outer.get_vlan_identifier(), 100);
        assert_eq!(outer.get_ethertype(), EtherType(0x8100));
        let inner = VlanPacket::new(outer.payload()).unwrap();
        assert_eq!(inner.get_vlan_identifier(), 200);
        assert_eq!(inner.get_ethertype(), EtherTypes::Ipv4);
        let ip = Ipv4Packet::new(inner.payload()).unwrap();
        let udp = UdpPacket::new(ip.payload()).unwrap();
        assert_eq!((udp.get_source(), udp.get_destination()), (1, 2));
    }

    #[test]
    fn single_vlan_tag_on_ipv6() {
        let frame = Frame::udp(addr(A6), addr(B6), 1, 2).vlan(0x8100, 7).build();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_ethertype(), EtherTypes::Vlan);
        let tag = VlanPacket::new(eth.payload()).unwrap();
        assert_eq!(tag.get_vlan_identifier(), 7);
        assert_eq!(tag.get_ethertype(), EtherTypes::Ipv6);
    }

    #[test]
    fn ipv4_options_are_padded_and_counted_in_ihl() {
        // Three NOPs pad to one 4-byte word.
        let frame = Frame::udp(addr(A4), addr(B4), 9, 10)
            .ipv4_options(&[1, 1, 1])
            .build();
        let ip = Ipv4Packet::new(&frame[14..]).unwrap();
        assert_eq!(ip.get_header_length(), 6);
        assert_eq!(&frame[14 + 20..14 + 24], &[1, 1, 1, 0]);
        assert_eq!(ones_sum(&[&frame[14..14 + 24]]), 0xffff);
        let udp = UdpPacket::new(ip.payload()).unwrap();
        assert_eq!((udp.get_source(), udp.get_destination()), (9, 10));

        let full = Frame::udp(addr(A4), addr(B4), 9, 10)
            .ipv4_options(&[1; 40])
            .build();
        assert_eq!(
            Ipv4Packet::new(&full[14..]).unwrap().get_header_length(),
            15
        );
    }

    #[test]
    #[should_panic(expected = "at most 40 fit")]
    fn ipv4_options_longer_than_ihl_allows_panic() {
        let _ = Frame::udp(addr(A4), addr(B4), 1, 2).ipv4_options(&[1; 41]);
    }

    #[test]
    fn ipv4_first_fragment_keeps_ports_later_ones_do_not() {
        let first = Frame::udp(addr(A4), addr(B4), 7, 8)
            .payload(&[0xab; 16])
            .ipv4_fragment(0, true)
            .build();
        let ip = Ipv4Packet::new(&first[14..]).unwrap();
        assert_eq!(ip.get_flags(), Ipv4Flags::MoreFragments);
        assert_eq!(ip.get_fragment_offset(), 0);
        assert_eq!(ip.get_identification(), FRAGMENT_ID);
        assert_eq!(UdpPacket::new(ip.payload()).unwrap().get_destination(), 8);

        let later = Frame::udp(addr(A4), addr(B4), 7, 8)
            .payload(&[0xcd; 16])
            .ipv4_fragment(3, false)
            .build();
        let ip = Ipv4Packet::new(&later[14..]).unwrap();
        assert_eq!(ip.get_flags(), 0);
        assert_eq!(ip.get_fragment_offset(), 3);
        assert_eq!(
            ip.payload(),
            &[0xcd; 16],
            "no UDP header in a non-first fragment"
        );
        assert_eq!(ones_sum(&[&later[14..34]]), 0xffff);
    }

    #[test]
    fn ipv6_extension_chain_links_every_next_header() {
        let frame = Frame::udp(addr(A6), addr(B6), 4000, 53)
            .ipv6_ext(IPV6_HOP_BY_HOP, 8)
            .ipv6_ext(IPV6_ROUTING, 24)
            .ipv6_ext(IPV6_DEST_OPTS, 16)
            .payload(b"x")
            .build();
        let ip = Ipv6Packet::new(&frame[14..]).unwrap();
        assert_eq!(ip.get_next_header(), IpNextHeaderProtocol(IPV6_HOP_BY_HOP));
        assert_eq!(usize::from(ip.get_payload_length()), 8 + 24 + 16 + 8 + 1);

        let rest = ip.payload();
        let hbh = ExtensionPacket::new(rest).unwrap();
        assert_eq!(hbh.get_next_header(), IpNextHeaderProtocol(IPV6_ROUTING));
        assert_eq!(hbh.get_hdr_ext_len(), 0);
        assert_eq!(&rest[2..8], &[1, 4, 0, 0, 0, 0], "one PadN option fills it");

        let rest = &rest[8..];
        let routing = RoutingPacket::new(rest).unwrap();
        assert_eq!(
            routing.get_next_header(),
            IpNextHeaderProtocol(IPV6_DEST_OPTS)
        );
        assert_eq!(routing.get_hdr_ext_len(), 2);
        assert_eq!(routing.get_segments_left(), 0);

        let rest = &rest[24..];
        let dest = ExtensionPacket::new(rest).unwrap();
        assert_eq!(dest.get_next_header(), IpNextHeaderProtocols::Udp);
        assert_eq!(dest.get_hdr_ext_len(), 1);

        let udp_bytes = &rest[16..];
        let udp = UdpPacket::new(udp_bytes).unwrap();
        assert_eq!((udp.get_source(), udp.get_destination()), (4000, 53));
        let pseudo = pseudo_v6(&ip, 17, udp_bytes.len());
        assert_eq!(ones_sum(&[&pseudo, udp_bytes]), 0xffff);
    }

    /// Walks an options header as Linux's `ip6_parse_tlv` does and checks it would accept it:
    /// options tile the header exactly, at most 7 consecutive padding bytes, at most 8 options.
    fn assert_linux_accepts_options(opts: &[u8]) {
        let (mut at, mut padding, mut options) = (2, 0, 0);
        while at < opts.len() {
            match opts[at] {
                0 => {
                    at += 1;
                    padding += 1;
                }
                1 => {
                    let n = 2 + usize::from(opts[at + 1]);
                    assert!(
                        opts[at + 2..at + n].iter().all(|&b| b == 0),
                        "PadN data not zero"
                    );
                    at += n;
                    padding += n;
                }
                IPV6_EXPERIMENTAL_OPTION => {
                    at += 2 + usize::from(opts[at + 1]);
                    padding = 0;
                    options += 1;
                }
                other => panic!("unexpected option type {other} at {at}"),
            }
            assert!(padding <= 7, "{padding} consecutive padding bytes at {at}");
        }
        assert_eq!(at, opts.len(), "options overrun the header");
        assert!(options <= 8, "{options} options");
    }

    #[test]
    fn options_headers_of_every_length_are_acceptable_to_linux() {
        for len in (8..=2048).step_by(8) {
            let frame = Frame::udp(addr(A6), addr(B6), 1, 2)
                .ipv6_ext(IPV6_DEST_OPTS, len)
                .build();
            let opts = &frame[14 + 40..14 + 40 + len];
            assert_eq!(usize::from(opts[1]), len / 8 - 1, "Hdr Ext Len for {len}");
            assert_linux_accepts_options(opts);
        }
    }

    #[test]
    fn ipv6_fragment_header_sits_in_the_chain() {
        let first = Frame::udp(addr(A6), addr(B6), 5, 6)
            .ipv6_ext(IPV6_HOP_BY_HOP, 8)
            .ipv6_fragment(0, true)
            .payload(&[1; 8])
            .build();
        let ip = Ipv6Packet::new(&first[14..]).unwrap();
        let hbh = ExtensionPacket::new(ip.payload()).unwrap();
        assert_eq!(hbh.get_next_header(), IpNextHeaderProtocols::Ipv6Frag);
        let frag = FragmentPacket::new(&ip.payload()[8..]).unwrap();
        assert_eq!(frag.get_next_header(), IpNextHeaderProtocols::Udp);
        assert_eq!(frag.get_fragment_offset(), 0);
        assert!(!frag.is_last_fragment());
        assert_eq!(frag.get_id(), u32::from(FRAGMENT_ID));
        let udp = UdpPacket::new(&ip.payload()[16..]).unwrap();
        assert_eq!(udp.get_destination(), 6);

        let later = Frame::udp(addr(A6), addr(B6), 5, 6)
            .ipv6_fragment(2, false)
            .payload(&[2; 8])
            .build();
        let ip = Ipv6Packet::new(&later[14..]).unwrap();
        assert_eq!(ip.get_next_header(), IpNextHeaderProtocols::Ipv6Frag);
        let frag = FragmentPacket::new(ip.payload()).unwrap();
        // pnet reports the offset field in place, i.e. units × 8 (it masks out the flag bits).
        assert_eq!(frag.get_fragment_offset(), 2 << 3);
        assert!(frag.is_last_fragment());
        assert_eq!(
            &ip.payload()[8..],
            &[2; 8],
            "no UDP header in a non-first fragment"
        );
    }

    #[test]
    #[should_panic(expected = "ipv6_ext on an IPv4 frame")]
    fn ipv6_ext_on_ipv4_panics() {
        let _ = Frame::udp(addr(A4), addr(B4), 1, 2).ipv6_ext(0, 8);
    }

    #[test]
    #[should_panic(expected = "one address family")]
    fn mixed_families_panic() {
        let _ = Frame::udp(addr(A4), addr(B6), 1, 2);
    }

    #[test]
    fn arp_request_parses_back() {
        let frame = arp_request();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination(), MacAddr::broadcast());
        assert_eq!(eth.get_ethertype(), EtherTypes::Arp);
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_target_proto_addr(), Ipv4Addr::new(198, 51, 100, 2));
    }

    #[test]
    fn truncate_and_pad() {
        let frame = Frame::udp(addr(A4), addr(B4), 1, 2).build();
        assert_eq!(frame.len(), 42);
        assert_eq!(truncate(&frame, 20), &frame[..20]);
        assert_eq!(truncate(&frame, 1000), frame);
        let padded = Frame::udp(addr(A4), addr(B4), 1, 2).pad_to(60).build();
        assert_eq!(padded.len(), 60);
        assert_eq!(&padded[..42], &frame[..]);
        let ip = Ipv4Packet::new(&padded[14..]).unwrap();
        assert_eq!(
            ip.get_total_length(),
            28,
            "padding lies outside the IP packet"
        );
    }
}
