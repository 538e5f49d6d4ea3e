//! Real traffic between namespaces through the kernel's own sockets: UDP from chosen source
//! addresses, paced and bounded; a UDP sink that counts datagrams per source; TCP connects from a
//! chosen source with a timeout.
//!
//! Every sender here is bounded in datagrams *and* in time, and sends only to the addresses it
//! is given — which a test or the lab picks inside namespaces it created.
//!
//! ```no_run
//! use std::{sync::atomic::AtomicBool, time::Duration};
//! use swarmwall_integration::{netns::{NetNs, VethPair}, traffic::{Flow, UdpSink, send_udp}};
//!
//! # fn main() -> anyhow::Result<()> {
//! let client = NetNs::new("swc")?;
//! let server = NetNs::new("sws")?;
//! let _link = VethPair::new(&client, &server, "198.51.100.2/24", "198.51.100.1/24")?;
//! let sink = UdpSink::bind(&server, "198.51.100.1:9000".parse()?)?;
//! let flow = Flow { src: "198.51.100.2".parse()?, dst: sink.local_addr() };
//! let sent = send_udp(&client, &[flow], 100, Duration::from_millis(200), &AtomicBool::new(false))?;
//! let received = sink.finish(Duration::from_millis(200), Duration::from_secs(2))?;
//! assert_eq!(received.get(&flow.src).copied(), Some(sent[0]));
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::{
    errno::Errno,
    sys::{
        socket::{
            AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt,
            sockopt::SendTimeout,
        },
        time::{TimeVal, TimeValLike as _},
    },
};

use crate::netns::{NetNs, in_netns};

/// How long [`send_udp`] may overrun its pacing interval before it gives up sending: the bound
/// in time that holds even if the machine is very slow.
pub const SEND_OVERRUN: Duration = Duration::from_secs(10);

/// One stream of datagrams: from a source address (local to the sending namespace) to a
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address; the sending socket is bound to it (port chosen by the kernel).
    pub src: IpAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

/// Sends `per_flow` small datagrams on each flow from inside `ns`, interleaved (one datagram per
/// flow per round) and paced evenly over `over`, and returns how many each flow sent, in order.
///
/// Bounded twice: at most `per_flow` datagrams per flow, and it stops at `over` +
/// [`SEND_OVERRUN`] whatever it has sent by then — or as soon as `stop` becomes true (a Ctrl-C
/// flag) — so a caller comparing the returned counts with `per_flow` sees any shortfall.
pub fn send_udp(
    ns: &NetNs,
    flows: &[Flow],
    per_flow: usize,
    over: Duration,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    let sockets = in_netns(ns, || {
        flows
            .iter()
            .map(|flow| {
                UdpSocket::bind((flow.src, 0))
                    .with_context(|| format!("binding a UDP socket to {}", flow.src))
            })
            .collect::<Result<Vec<_>>>()
    })??;
    let mut sent = vec![0u64; flows.len()];
    let start = Instant::now();
    let hard_stop = start + over + SEND_OVERRUN;
    for round in 0..per_flow {
        // Round r starts at r/per_flow of the way through `over`.
        let due = start + over.mul_f64(round as f64 / per_flow as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if stop.load(Ordering::Relaxed) || Instant::now() > hard_stop {
            break;
        }
        for ((socket, flow), sent) in sockets.iter().zip(flows).zip(&mut sent) {
            let payload = format!("swarmwall {} -> {} #{round}", flow.src, flow.dst);
            socket
                .send_to(payload.as_bytes(), flow.dst)
                .with_context(|| format!("sending from {} to {}", flow.src, flow.dst))?;
            *sent += 1;
        }
    }
    Ok(sent)
}

/// A UDP socket bound inside a namespace, drained by a background thread that counts datagrams
/// per source address. Stopped and joined by [`UdpSink::finish`], or on drop.
#[derive(Debug)]
pub struct UdpSink {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    total: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<HashMap<IpAddr, u64>>>>,
}

impl UdpSink {
    /// Binds to `addr` inside `ns` (port 0 picks one: see [`UdpSink::local_addr`]) and starts
    /// counting.
    pub fn bind(ns: &NetNs, addr: SocketAddr) -> Result<UdpSink> {
        let socket = in_netns(ns, || UdpSocket::bind(addr))?
            .with_context(|| format!("binding the UDP sink to {addr} in netns {}", ns.name()))?;
        let local = socket.local_addr()?;
        // Short, so the thread notices `stop` promptly.
        socket.set_read_timeout(Some(Duration::from_millis(10)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("udp-sink-{}", local.port()))
            .spawn({
                let (stop, total) = (Arc::clone(&stop), Arc::clone(&total));
                move || drain(&socket, &stop, &total)
            })
            .context("starting the UDP sink thread")?;
        Ok(UdpSink {
            local,
            stop,
            total,
            thread: Some(thread),
        })
    }

    /// The address the sink listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams received so far, from every source.
    pub fn received(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Waits until nothing has arrived for `quiet` (or `max_wait` has passed), then stops the
    /// sink and returns the datagrams received per source address.
    pub fn finish(mut self, quiet: Duration, max_wait: Duration) -> Result<HashMap<IpAddr, u64>> {
        let deadline = Instant::now() + max_wait;
        let mut last = self.received();
        let mut last_change = Instant::now();
        while Instant::now() < deadline && last_change.elapsed() < quiet {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.received();
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
        self.stop_and_join()
            .ok_or_else(|| anyhow!("UDP sink on {} already stopped", self.local))?
    }

    fn stop_and_join(&mut self) -> Option<Result<HashMap<IpAddr, u64>>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        Some(match thread.join() {
            Ok(counts) => counts.with_context(|| format!("UDP sink on {}", self.local)),
            Err(_) => Err(anyhow!("UDP sink thread on {} panicked", self.local)),
        })
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

fn drain(
    socket: &UdpSocket,
    stop: &AtomicBool,
    total: &AtomicU64,
) -> io::Result<HashMap<IpAddr, u64>> {
    let mut counts = HashMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                *counts.entry(from.ip()).or_insert(0) += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(counts)
}

/// A TCP listener bound to `addr` inside `ns`.
pub fn tcp_listen(ns: &NetNs, addr: SocketAddr) -> Result<TcpListener> {
    in_netns(ns, || TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr} in netns {}", ns.name()))
}

/// Connects from `src` (an address local to `ns`) to `dst`, giving up after `timeout`.
///
/// The outer `Result` fails if the attempt could not be made (entering the namespace, creating
/// or binding the socket); the inner one is the connect's outcome: a connection, or an error
/// whose kind is [`io::ErrorKind::TimedOut`] when nothing answered in time (a SYN dropped on the
/// way), [`io::ErrorKind::ConnectionRefused`] when a reset came back.
pub fn tcp_connect_from(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<io::Result<TcpStream>> {
    if timeout.is_zero() {
        // SO_SNDTIMEO of zero means "block forever": not what anyone asking for 0 wants.
        bail!("tcp_connect_from: the timeout must be positive");
    }
    in_netns(ns, || -> Result<io::Result<TcpStream>> {
        let family = if src.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = nix::sys::socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
            .context("creating a TCP socket")?;
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )
        .with_context(|| format!("binding a TCP socket to {src}"))?;
        // A blocking connect honours SO_SNDTIMEO and fails with EINPROGRESS when it expires.
        let millis = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        setsockopt(&fd, SendTimeout, &TimeVal::milliseconds(millis))
            .context("setting SO_SNDTIMEO")?;
        Ok(match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
            Ok(()) => Ok(TcpStream::from(fd)),
            Err(Errno::EINPROGRESS) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect from {src} to {dst}: no answer within {timeout:?}"),
            )),
            Err(errno) => Err(io::Error::from(errno)),
        })
    })?
}

/// Sends `per_source` datagrams from each of `sources` (addresses in `cli`) to a fresh sink on
/// `sink_ip` in `srv`, paced over 200 ms, and returns how many arrived from each, in order:
/// the question most blocking tests ask ("did this source get through?").
pub fn delivered(
    srv: &NetNs,
    cli: &NetNs,
    sink_ip: IpAddr,
    sources: &[IpAddr],
    per_source: usize,
) -> Result<Vec<u64>> {
    let sink = UdpSink::bind(srv, SocketAddr::new(sink_ip, 0))?;
    let flows: Vec<Flow> = sources
        .iter()
        .map(|src| Flow {
            src: *src,
            dst: sink.local_addr(),
        })
        .collect();
    send_udp(
        cli,
        &flows,
        per_source,
        Duration::from_millis(200),
        &AtomicBool::new(false),
    )?;
    let got = sink.finish(Duration::from_millis(200), Duration::from_secs(3))?;
    Ok(sources
        .iter()
        .map(|s| got.get(s).copied().unwrap_or(0))
        .collect())
}
