//! Where the detector's request events come from. Each source turns its own input into
//! [`RequestEvent`]s behind one interface, so the pipeline (live) and `analyze` (offline) do not
//! care which: the kernel's ring buffer of sampled payloads ([`kernel::KernelRing`]) and pcap
//! captures ([`pcap::PcapSource`]), and web-server access logs ([`log::LogSource`] reads a
//! file; [`follow`] tails live ones through logrotate).

pub mod follow;
pub mod hello;
pub mod kernel;
pub mod log;
pub mod pcap;
pub mod tailed;

use std::time::Duration;

use crate::l7::RequestEvent;

/// What a source has read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Units of input read: ring-buffer samples, packets, log lines.
    pub read: u64,
    /// Request events handed out.
    pub requests: u64,
    /// Units of input that held no request (or could not be parsed).
    pub unparsed: u64,
}

/// How far a live source is behind what was written to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceLag {
    /// Bytes written and not read yet.
    pub behind_bytes: u64,
    /// The time the newest line read carries (its own timestamp, ns since the Unix epoch), if
    /// any line was read: how old it is says how far behind the events are.
    pub newest_line_ns: Option<u64>,
}

/// What [`EventSource::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Input was handed out, or none came within the timeout: poll again.
    More,
    /// The input is exhausted (end of a file): polling again yields nothing.
    End,
}

/// Errors that stop a source (a damaged tail of a file only warns).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input could not be opened.
    #[error("{path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not in a format the source reads.
    #[error("{path} is not a pcap capture swarmwall can read: {why}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// Text that no access-log format reads, or a format that cannot be used.
    #[error("{path} is neither a pcap capture nor an access log swarmwall can read: {why}")]
    NotLog {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// Waiting for or reading input failed.
    #[error("reading {name}: {source}")]
    Read {
        /// The source's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A producer of request events for the detector.
pub trait EventSource: Send {
    /// What the source reads, for logs and errors (`kernel ring buffer`, a file name).
    fn name(&self) -> &str;
    /// Waits up to `timeout` for input and hands each request event in it to `out`, in time
    /// order. A file source does not wait; it hands out a bounded batch per call.
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut dyn FnMut(RequestEvent),
    ) -> Result<Polled, SourceError>;
    /// What it has read so far.
    fn counters(&self) -> SourceCounters;
    /// What is wrong with the input right now (a log that cannot be read), for status; `None`
    /// while all is well.
    fn problem(&self) -> Option<String> {
        None
    }
    /// How far behind its input the source is (a followed log); `None` for a source where
    /// that does not apply.
    fn lag(&self) -> Option<SourceLag> {
        None
    }
    /// What its TLS hello reassembly did (all zero for a source that needs none).
    fn hellos(&self) -> hello::HelloCounters {
        hello::HelloCounters::default()
    }
    /// Problems with the input that did not stop it (e.g. a truncated capture), taken once.
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}
