//! Helpers for swarmwall's integration tests (in `tests/tests/*.rs`) and the lab demo.
//!
//! - [`hello`]: a browser-sized TLS ClientHello (post-quantum key share, SNI past 1500 bytes).
//! - [`https_scenarios`]: the same, for HTTPS sites without a log: pcaps of TLS ClientHellos
//!   (a swarm, a flash crowd, a NAT) with ground truth.
//! - [`netns`]: network namespaces, veth pairs and child processes as RAII guards, running code
//!   inside a namespace, injecting raw frames; [`require_root!`] for tests that need root.
//! - [`packets`]: Ethernet frames with VLAN tags, IPv4 options/fragments, IPv6 extension headers,
//!   TCP/UDP, valid checksums — the shapes the XDP parser must handle.
//! - [`scenarios`]: deterministic pcaps of web traffic with ground-truth labels — browsing, a bot
//!   swarm, a flash crowd, a NAT, a crawler, a multi-tenant attack — for `swarmwall analyze`.
//! - [`traffic`]: real traffic through the kernel's sockets — paced, bounded UDP from chosen
//!   source addresses, a UDP sink counting per source, TCP connects from a chosen source.
//! - [`web`]: real HTTP — a small image-heavy site served by hyper, legitimate browsers
//!   (keep-alive, page then assets, `Referer`, think time) and a bot swarm (many sources, a new
//!   connection per request, the same few pages, one `User-Agent`), every request's outcome kept.
//! - [`tls`]: real HTTPS — the same site behind rustls with a throw-away certificate and an nginx
//!   `combined` access log, its browsers and swarm over TLS, client profiles with distinct JA4s.
//! - [`swarm_lab`]: the whole story — an HTTP server behind the swarmwall daemon, visitors and a
//!   bot swarm in three namespaces — for `cargo xtask lab` and the live test.
//!
//! This crate deliberately does not depend on `swarmwall`, so it builds before the eBPF
//! toolchain is set up.

#![warn(missing_docs)]

pub mod hello;
pub mod https_scenarios;
pub mod netns;
pub mod packets;
pub mod scenarios;
pub mod swarm_lab;
pub mod tls;
pub mod traffic;
pub mod web;
