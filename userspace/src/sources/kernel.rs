//! The kernel's ring buffer of sampled payloads (HTTP request heads, TLS ClientHellos), parsed
//! into request events. A hello that came in several records (a browser's, over two segments)
//! is reassembled first ([`super::hello`]), so the parser sees all of it.

use std::{os::fd::AsRawFd as _, time::Duration};

use super::{
    EventSource, Polled, SourceCounters, SourceError,
    hello::{HelloAssembler, HelloCounters, Limits, Payload},
};
use crate::{
    dataplane::{L7Reader, monotonic_ns},
    l7::{self, RequestEvent},
};

/// The data plane's L7 ring buffer as an [`EventSource`].
pub struct KernelRing {
    reader: L7Reader,
    hellos: HelloAssembler,
    counters: SourceCounters,
}

impl KernelRing {
    /// Reads from `reader` (taken from the data plane once), reassembling hellos within the
    /// default [`Limits`].
    pub fn new(reader: L7Reader) -> Self {
        Self::with_limits(reader, Limits::default())
    }

    /// Reads from `reader`, reassembling hellos within `limits`.
    pub fn with_limits(reader: L7Reader, limits: Limits) -> Self {
        Self {
            reader,
            hellos: HelloAssembler::new(limits),
            counters: SourceCounters::default(),
        }
    }

    /// What the hello reassembly did so far.
    pub fn hello_counters(&self) -> HelloCounters {
        self.hellos.counters()
    }

    /// Hellos waiting for their remaining records, and the bytes they hold.
    pub fn hellos_pending(&self) -> (usize, usize) {
        (self.hellos.pending(), self.hellos.bytes())
    }
}

/// Parses one whole payload into request events for `out`, counting.
fn parse(counters: &mut SourceCounters, p: &Payload, out: &mut dyn FnMut(RequestEvent)) {
    let src = crate::addr::from_key(&p.src);
    let dst = crate::addr::from_key(&p.dst);
    let events = l7::from_payload(p.kind, p.ts_ns, src, dst, p.dst_port, &p.data);
    if events.is_empty() {
        counters.unparsed += 1;
    }
    for ev in events {
        counters.requests += 1;
        out(ev);
    }
}

impl EventSource for KernelRing {
    fn name(&self) -> &str {
        "the kernel's L7 ring buffer"
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut dyn FnMut(RequestEvent),
    ) -> Result<Polled, SourceError> {
        let mut pfd = libc::pollfd {
            fd: self.reader.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // The kernel wakes this reader only once a backlog builds (`L7_WAKE_BYTES`), so a
        // longer sleep would hold a quiet site's events back.
        let timeout = timeout.min(Duration::from_millis(swarmwall_maps::L7_READER_MAX_WAIT_MS));
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call; the ring buffer's fd lives as
        // long as `self.reader`.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(SourceError::Read {
                    name: self.name().into(),
                    source: e,
                });
            }
        }
        let now = monotonic_ns();
        let counters = &mut self.counters;
        while let Some(sample) = self.reader.next_event() {
            counters.read += 1;
            self.hellos
                .push(&sample, now, &mut |p| parse(counters, &p, out));
        }
        self.hellos
            .expire(monotonic_ns(), &mut |p| parse(counters, &p, out));
        Ok(Polled::More)
    }

    fn counters(&self) -> SourceCounters {
        self.counters
    }

    fn hellos(&self) -> HelloCounters {
        self.hellos.counters()
    }
}
