//! The kernel's ring buffer of sampled payloads (HTTP request heads, TLS ClientHellos), parsed
//! into request events.

use std::{os::fd::AsRawFd as _, time::Duration};

use super::{EventSource, Polled, SourceCounters, SourceError};
use crate::{
    dataplane::L7Reader,
    l7::{self, RequestEvent},
};

/// The data plane's L7 ring buffer as an [`EventSource`].
pub struct KernelRing {
    reader: L7Reader,
    counters: SourceCounters,
}

impl KernelRing {
    /// Reads from `reader` (taken from the data plane once).
    pub fn new(reader: L7Reader) -> Self {
        Self {
            reader,
            counters: SourceCounters::default(),
        }
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
        while let Some(sample) = self.reader.next_event() {
            self.counters.read += 1;
            let events = l7::from_sample(&sample);
            if events.is_empty() {
                self.counters.unparsed += 1;
            }
            for ev in events {
                self.counters.requests += 1;
                out(ev);
            }
        }
        Ok(Polled::More)
    }

    fn counters(&self) -> SourceCounters {
        self.counters
    }
}
