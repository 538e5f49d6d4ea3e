//! Web-server access logs (nginx, Apache) as a source of request events: the only one that
//! sees pages on HTTPS sites, where the wire shows just a ClientHello.
//!
//! [`format`] compiles a line format and parses one line into a [`RequestEvent`];
//! [`LineSplitter`] cuts a byte stream into lines with a bounded line length (a file read in
//! full here, a tailed file later); [`LogSource`] reads a whole file as an [`EventSource`], for
//! `analyze`; [`config`] holds the `[[sources.log]]` configuration types.
//!
//! Lines are hostile input like payloads: whatever the bytes, a line gives an event or a counted
//! [`Reject`] reason, never an error that stops the source.

pub mod config;
pub mod format;

use std::{fs::File, io::Read, path::Path, time::Duration};

pub use format::{Format, FormatError, JsonFields, LineParser, Reject};

use super::{EventSource, Polled, SourceCounters, SourceError};
use crate::l7::RequestEvent;

/// Longest line parsed; longer ones are counted as [`Reject::Oversize`] and skipped. nginx's
/// own lines stay far below (its request line buffer is 8 KiB by default).
pub const MAX_LINE: usize = 8 * 1024;

/// Lines read, events made, and rejected lines by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCounters {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Request events made.
    pub events: u64,
    /// Rejected lines, indexed by [`Reject::index`].
    pub rejected: [u64; Reject::ALL.len()],
}

impl LogCounters {
    /// Rejected lines, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `(reason, count)` for every reason that occurred.
    pub fn reasons(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    /// Counts one line's outcome.
    pub fn count(&mut self, outcome: &Result<RequestEvent, Reject>) {
        self.lines += 1;
        match outcome {
            Ok(_) => self.events += 1,
            Err(r) => self.rejected[r.index()] += 1,
        }
    }
}

/// A line handed out by [`LineSplitter`]: its bytes (no newline), or the fact that it was
/// longer than the limit.
pub type Line<'a> = Result<&'a [u8], Reject>;

/// Cuts chunks of a byte stream into lines, holding at most `max` bytes of an unfinished line:
/// a longer one is dropped as it streams and reported once, as [`Reject::Oversize`], when its
/// newline (or the end) comes.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl LineSplitter {
    /// A splitter with a line limit of `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            discarding: false,
            max,
        }
    }

    /// Hands every line completed by `chunk` to `f`; keeps the unfinished rest.
    pub fn push(&mut self, chunk: &[u8], mut f: impl FnMut(Line<'_>)) {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let seg = &chunk[start..nl];
            start = nl + 1;
            if self.discarding {
                self.discarding = false;
                f(Err(Reject::Oversize));
            } else if !self.partial.is_empty() {
                if self.partial.len() + seg.len() > self.max {
                    f(Err(Reject::Oversize));
                } else {
                    self.partial.extend_from_slice(seg);
                    f(Ok(&self.partial));
                }
                self.partial.clear();
            } else if seg.len() > self.max {
                f(Err(Reject::Oversize));
            } else {
                f(Ok(seg));
            }
        }
        let tail = &chunk[start..];
        if self.discarding {
            return;
        }
        if self.partial.len() + tail.len() > self.max {
            self.discarding = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(tail);
        }
    }

    /// Whether an unfinished line is held (or being dropped).
    pub fn has_partial(&self) -> bool {
        self.discarding || !self.partial.is_empty()
    }

    /// At the end of the input: hands out the unfinished last line, if any.
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if self.discarding {
            self.discarding = false;
            f(Err(Reject::Oversize));
        } else if !self.partial.is_empty() {
            f(Ok(&self.partial));
            self.partial.clear();
        }
    }
}

/// Bytes read from the file per [`EventSource::poll`].
const CHUNK: usize = 256 * 1024;

/// An access-log file read once, start to end, as an [`EventSource`] (for `analyze`). Times
/// come from the lines, kept monotonic: servers write a line when a request ends, so lines are
/// only roughly in start order.
pub struct LogSource {
    name: String,
    file: File,
    parser: LineParser,
    splitter: LineSplitter,
    counters: LogCounters,
    last_ts: u64,
    buf: Vec<u8>,
    done: bool,
    /// First rejected line: its number and reason, for the warning.
    first_reject: Option<(u64, Reject)>,
    /// The last line had no newline (a truncated file, or one still being written).
    unterminated: bool,
    warned: bool,
}

impl LogSource {
    /// Opens `path` to be read with `parser`.
    pub fn open(path: &Path, parser: LineParser) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: name.clone(),
            source,
        })?;
        Ok(Self {
            name,
            file,
            parser,
            splitter: LineSplitter::new(MAX_LINE),
            counters: LogCounters::default(),
            last_ts: 0,
            buf: vec![0; CHUNK],
            done: false,
            first_reject: None,
            unterminated: false,
            warned: false,
        })
    }

    /// Lines, events and rejections so far.
    pub fn log_counters(&self) -> LogCounters {
        self.counters
    }

    /// The first rejected line's number (from 1) and why.
    pub fn first_reject(&self) -> Option<(u64, Reject)> {
        self.first_reject
    }

    fn line(&mut self, line: Line<'_>, out: &mut dyn FnMut(RequestEvent)) {
        if matches!(line, Ok(l) if l.trim_ascii().is_empty()) {
            self.counters.lines += 1;
            return;
        }
        let outcome = line.and_then(|l| self.parser.parse(l));
        self.counters.count(&outcome);
        match outcome {
            Ok(mut ev) => {
                self.last_ts = self.last_ts.max(ev.ts_ns);
                ev.ts_ns = self.last_ts;
                out(ev);
            }
            Err(r) => {
                if self.first_reject.is_none() {
                    self.first_reject = Some((self.counters.lines, r));
                }
            }
        }
    }
}

impl EventSource for LogSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(
        &mut self,
        _timeout: Duration,
        out: &mut dyn FnMut(RequestEvent),
    ) -> Result<Polled, SourceError> {
        if self.done {
            return Ok(Polled::End);
        }
        let n = loop {
            match self.file.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SourceError::Read {
                        name: self.name.clone(),
                        source,
                    });
                }
            }
        };
        // Moved out for the call, so its callback can borrow `self` (no allocation: an empty
        // splitter holds an empty Vec).
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
        let buf = std::mem::take(&mut self.buf);
        if n == 0 {
            self.unterminated = splitter.has_partial();
            splitter.finish(|l| self.line(l, out));
            self.done = true;
        } else {
            splitter.push(&buf[..n], |l| self.line(l, out));
        }
        self.buf = buf;
        self.splitter = splitter;
        Ok(if self.done { Polled::End } else { Polled::More })
    }

    fn counters(&self) -> SourceCounters {
        SourceCounters {
            read: self.counters.lines,
            requests: self.counters.events,
            unparsed: self.counters.rejected_total(),
        }
    }

    fn take_warnings(&mut self) -> Vec<String> {
        let mut w = Vec::new();
        let c = self.counters;
        // Rejections are summed up once, when the file is done.
        if self.done && !std::mem::replace(&mut self.warned, true) && c.rejected_total() > 0 {
            let reasons: Vec<String> = c.reasons().map(|(r, n)| format!("{r} {n}")).collect();
            let first = self
                .first_reject
                .map(|(l, r)| format!("; first at line {l}: {}", r.as_str()))
                .unwrap_or_default();
            w.push(format!(
                "{}: {} of {} lines rejected ({}){first}",
                self.name,
                c.rejected_total(),
                c.lines,
                reasons.join(", ")
            ));
        }
        if self.unterminated {
            w.push(format!(
                "{} does not end with a newline (truncated, or still being written); its last line was read as it is",
                self.name
            ));
            self.unterminated = false;
        }
        w
    }
}

#[cfg(test)]
mod tests;
