//! Bounded header parsing: Ethernet, up to two VLAN tags, IPv4 (with options), IPv6 (with up to
//! [`IPV6_EXT_MAX`] extension headers), TCP/UDP destination port.
//!
//! Every read goes through [`ptr_at`], whose bounds check sits right next to the access so the
//! verifier can see it; every loop has a constant bound.

use aya_ebpf::programs::XdpContext;
use swarmwall_maps::{Addr, Stat, v4_mapped};

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

/// What the program needs to know of a packet.
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
}

/// Returns a pointer to a `T` at `offset` from the start of the packet, if it lies wholly inside.
///
/// Only used with `T` of two bytes or more: LLVM rewrites a one-byte check into `ptr >= end`, from
/// which the verifier derives no range when the pointer has a variable offset.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a header of `N` bytes at `offset` into a stack copy after one bounds check.
#[inline(always)]
fn header<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    // SAFETY: ptr_at checked that all N bytes lie inside the packet; read_unaligned because
    // packet headers carry no alignment guarantee.
    ptr_at::<[u8; N]>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Parses the headers. `Err` carries the stat slot of a packet that must simply pass.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Stat> {
    let eth: [u8; 14] = header(ctx, 0).ok_or(Stat::ParseFailed)?;
    let mut off = ETH_HLEN;
    let mut proto = u16::from_be_bytes([eth[12], eth[13]]);
    for _ in 0..VLAN_MAX_DEPTH {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        // The tag is 4 bytes: TCI, then the encapsulated ethertype.
        let tag: [u8; 4] = header(ctx, off).ok_or(Stat::ParseFailed)?;
        proto = u16::from_be_bytes([tag[2], tag[3]]);
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
    let h: [u8; 20] = header(ctx, off).ok_or(Stat::ParseFailed)?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(Stat::ParseFailed);
    }
    let mut pkt = Packet {
        src: v4_mapped([h[12], h[13], h[14], h[15]]),
        dst: v4_mapped([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        has_port: false,
        dst_port: 0,
    };
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
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
    let h: [u8; 40] = header(ctx, off).ok_or(Stat::ParseFailed)?;
    if h[0] >> 4 != 6 {
        return Err(Stat::ParseFailed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let mut pkt = Packet {
        src,
        dst,
        proto: h[6],
        has_port: false,
        dst_port: 0,
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
                pkt.proto = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(e) = header::<4>(ctx, l4) else {
                    record_extra(Stat::L4Truncated);
                    return Ok(pkt);
                };
                pkt.proto = e[0];
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
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
    let whole = if pkt.proto == IPPROTO_TCP {
        ptr_at::<[u8; 20]>(ctx, off).is_some()
    } else {
        ptr_at::<[u8; 8]>(ctx, off).is_some()
    };
    match header::<4>(ctx, off) {
        Some(p) if whole => {
            pkt.dst_port = u16::from_be_bytes([p[2], p[3]]);
            pkt.has_port = true;
        }
        _ => record_extra(Stat::L4Truncated),
    }
}
