//! Bounded header parsing: Ethernet, up to two VLAN tags, IPv4 (with options), IPv6 (with up to
//! [`IPV6_EXT_MAX`] extension headers), TCP/UDP destination port.
//!
//! Every read goes through [`ptr_at`], whose bounds check sits right next to the access so the
//! verifier can see it; every loop has a constant bound.

use aya_ebpf::programs::XdpContext;
use swarmwall_maps::{Addr, Stat, addr_from_words, v4_mapped_hi};

use crate::record_extra;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_MAX_DEPTH: usize = 2;
const IPV6_EXT_MAX: usize = 6;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// What the program needs to know of a packet. Aligned so addresses compare and copy as words.
#[repr(C, align(8))]
pub struct Packet {
    /// Source address, IPv4-mapped for IPv4.
    pub src: Addr,
    /// Destination address, IPv4-mapped for IPv4.
    pub dst: Addr,
    /// IP protocol of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// Whether `dst_port` is known: TCP/UDP, not a non-first fragment, header present.
    pub has_port: bool,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// Source port, host byte order (when `has_port`).
    pub src_port: u16,
    /// Offset of the transport header from the start of the frame (TCP/UDP, when `has_port`);
    /// the sampling program finds the payload from there, so no other path pays for it.
    pub l4_off: u16,
}

/// Returns a pointer to `N` bytes at `offset` from the start of the packet, if they lie wholly
/// inside; the one bounds check for every field read from that header.
///
/// Only used with `N` of two or more: LLVM rewrites a one-byte check into `ptr >= end`, from
/// which the verifier derives no range when the pointer has a variable offset.
#[inline(always)]
pub(crate) fn header<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*const u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    Some((start + offset) as *const u8)
}

/// Reads a `T` at `at` bytes into a header checked by [`header`].
///
/// # Safety
/// `h` must come from `header::<N>` with `at + size_of::<T>() <= N`.
#[inline(always)]
pub(crate) unsafe fn field<T: Copy>(h: *const u8, at: usize) -> T {
    // SAFETY: in bounds per the caller's contract; read_unaligned because headers sit at 2-byte
    // offsets (one load: the object is built with allows-misaligned-mem-access).
    unsafe { h.add(at).cast::<T>().read_unaligned() }
}

/// Parses the headers. `Err` carries the stat slot of a packet that must simply pass.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Stat> {
    let eth = header::<ETH_HLEN>(ctx, 0).ok_or(Stat::ParseFailed)?;
    let mut off = ETH_HLEN;
    // SAFETY: bytes 12..14 of a checked 14-byte header.
    let mut proto = u16::from_be(unsafe { field::<u16>(eth, 12) });
    for _ in 0..VLAN_MAX_DEPTH {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        // The tag is 4 bytes: TCI, then the encapsulated ethertype.
        let tag = header::<4>(ctx, off).ok_or(Stat::ParseFailed)?;
        // SAFETY: bytes 2..4 of a checked 4-byte tag.
        proto = u16::from_be(unsafe { field::<u16>(tag, 2) });
        off += 4;
    }
    match proto {
        ETH_P_IP => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        _ => Err(Stat::NotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Result<Packet, Stat> {
    let h = header::<20>(ctx, off).ok_or(Stat::ParseFailed)?;
    // SAFETY: every read below lies within the checked 20-byte header.
    let (vihl, frag, proto, src, dst) = unsafe {
        (
            field::<u8>(h, 0),
            field::<u16>(h, 6),
            field::<u8>(h, 9),
            field::<u32>(h, 12),
            field::<u32>(h, 16),
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Stat::ParseFailed);
    }
    let mut pkt = Packet {
        src: addr_from_words([0, v4_mapped_hi(src)]),
        dst: addr_from_words([0, v4_mapped_hi(dst)]),
        proto,
        has_port: false,
        dst_port: 0,
        src_port: 0,
        l4_off: 0,
    };
    if u16::from_be(frag) & 0x1fff != 0 {
        // Only the first fragment carries the transport header.
        record_extra(Stat::Fragment);
        return Ok(pkt);
    }
    // Options are skipped by length; the transport header check below implies they are present.
    ports(ctx, off + ihl, &mut pkt);
    Ok(pkt)
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Result<Packet, Stat> {
    let h = header::<40>(ctx, off).ok_or(Stat::ParseFailed)?;
    // SAFETY: every read below lies within the checked 40-byte header.
    let (vers, next, src, dst) = unsafe {
        (
            field::<u8>(h, 0),
            field::<u8>(h, 6),
            [field::<u64>(h, 8), field::<u64>(h, 16)],
            [field::<u64>(h, 24), field::<u64>(h, 32)],
        )
    };
    if vers >> 4 != 6 {
        return Err(Stat::ParseFailed);
    }
    let mut pkt = Packet {
        src: addr_from_words(src),
        dst: addr_from_words(dst),
        proto: next,
        has_port: false,
        dst_port: 0,
        src_port: 0,
        l4_off: 0,
    };
    let mut l4 = off + 40;
    for _ in 0..IPV6_EXT_MAX {
        match pkt.proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header and length in 8-octet units, not counting the first 8.
                let Some(e) = header::<2>(ctx, l4) else {
                    record_extra(Stat::L4Truncated);
                    return Ok(pkt);
                };
                // SAFETY: both bytes lie within the checked 2-byte header start.
                let (nh, len) = unsafe { (field::<u8>(e, 0), field::<u8>(e, 1)) };
                pkt.proto = nh;
                l4 += (len as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(e) = header::<4>(ctx, l4) else {
                    record_extra(Stat::L4Truncated);
                    return Ok(pkt);
                };
                // SAFETY: bytes 0 and 2..4 lie within the checked 4 bytes.
                let (nh, fo) = unsafe { (field::<u8>(e, 0), field::<u16>(e, 2)) };
                pkt.proto = nh;
                if u16::from_be(fo) & 0xfff8 != 0 {
                    record_extra(Stat::Fragment);
                    return Ok(pkt);
                }
                l4 += 8;
            }
            _ => break,
        }
    }
    ports(ctx, l4, &mut pkt);
    Ok(pkt)
}

/// Fills in the destination port of a TCP or UDP header at `off`.
#[inline(always)]
fn ports(ctx: &XdpContext, off: usize, pkt: &mut Packet) {
    if pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP {
        return;
    }
    // Only the ports are needed, but a header shorter than its minimum is a truncated packet.
    let h = if pkt.proto == IPPROTO_TCP {
        header::<20>(ctx, off)
    } else {
        header::<8>(ctx, off)
    };
    match h {
        Some(h) => {
            // SAFETY: bytes 0..4 lie within the checked (8- or 20-byte) header.
            let (sport, dport) = unsafe { (field::<u16>(h, 0), field::<u16>(h, 2)) };
            pkt.src_port = u16::from_be(sport);
            pkt.dst_port = u16::from_be(dport);
            pkt.has_port = true;
            pkt.l4_off = off as u16;
        }
        None => record_extra(Stat::L4Truncated),
    }
}
