//! A live access log: a [`Follower`] (tail -F through logrotate) feeding a log-format
//! [`LineParser`], as an [`EventSource`] for the daemon's swarm pipeline.
//!
//! Events are stamped with the kernel's monotonic clock when their line is read, not with the
//! line's own time: the detector's windows run on one clock with the kernel's samples, and a
//! line is read within one poll of being written (inotify wakes the follower).

use std::time::Duration;

use super::{
    EventSource, Polled, SourceCounters, SourceError, SourceLag,
    follow::{FollowError, Follower},
    log::{LogCounters, MAX_LINE, config::LogSourceConfig, format::LineParser},
};
use crate::{dataplane::monotonic_ns, l7::RequestEvent};

/// One `[[sources.log]]` entry, followed live.
pub struct TailedLog {
    follower: Follower,
    parser: LineParser,
    counters: LogCounters,
    /// The newest time a line read carried (ns since the Unix epoch).
    newest_line_ns: Option<u64>,
}

/// Why a log source could not start.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The entry does not validate.
    #[error(transparent)]
    Config(#[from] super::log::config::LogConfigError),
    /// The path pattern cannot be followed.
    #[error(transparent)]
    Follow(#[from] FollowError),
}

impl TailedLog {
    /// Follows the log(s) `config` names, from their end.
    pub fn new(config: &LogSourceConfig) -> Result<Self, TailError> {
        let parser = config.validate()?;
        Ok(Self {
            follower: Follower::new(&config.path, MAX_LINE)?,
            parser,
            counters: LogCounters::default(),
            newest_line_ns: None,
        })
    }

    /// Lines and rejections by reason.
    pub fn log_counters(&self) -> LogCounters {
        self.counters
    }
}

impl EventSource for TailedLog {
    fn name(&self) -> &str {
        self.follower.pattern()
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut dyn FnMut(RequestEvent),
    ) -> Result<Polled, SourceError> {
        let (parser, counters, newest) =
            (&self.parser, &mut self.counters, &mut self.newest_line_ns);
        self.follower.poll(timeout, &mut |_, line| {
            let parsed = parser.parse(line);
            counters.count(&parsed);
            if let Ok(mut ev) = parsed {
                // The line's own time, before the event is put on the kernel's clock.
                *newest = Some(newest.map_or(ev.ts_ns, |n| n.max(ev.ts_ns)));
                ev.ts_ns = monotonic_ns();
                out(ev);
            }
        });
        Ok(Polled::More)
    }

    fn counters(&self) -> SourceCounters {
        let oversize = self.follower.stats().oversize;
        SourceCounters {
            read: self.counters.lines + oversize,
            requests: self.counters.events,
            unparsed: self.counters.rejected_total() + oversize,
        }
    }

    fn lag(&self) -> Option<SourceLag> {
        Some(SourceLag {
            behind_bytes: self.follower.behind(),
            newest_line_ns: self.newest_line_ns,
        })
    }

    fn problem(&self) -> Option<String> {
        let s = self.follower.stats();
        s.error.clone().or_else(|| {
            s.waiting
                .then(|| format!("no file matches {} yet", self.follower.pattern()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write as _, time::Instant};

    use tempfile::TempDir;

    use super::*;

    fn config(path: &str) -> LogSourceConfig {
        toml::from_str(&format!(
            "path = {path:?}\nsite = [\"203.0.113.10:443\"]\ntrusted_proxies = [\"192.0.2.1\"]"
        ))
        .unwrap()
    }

    #[test]
    fn lines_become_events_on_the_kernel_clock_and_garbage_is_counted() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let mut src = TailedLog::new(&config(log.to_str().unwrap())).unwrap();
        let mut got = Vec::new();
        src.poll(Duration::from_millis(10), &mut |e| got.push(e))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "198.51.100.7 - - [01/May/2024:12:00:00 +0000] \"GET /gallery/1?x=1 HTTP/1.1\" 200 512 \"-\" \"bot/1.0\""
        )
        .unwrap();
        writeln!(f, "\u{1b}[31mnot a log line at all").unwrap();
        drop(f);
        let before = monotonic_ns();
        let deadline = Instant::now() + Duration::from_secs(5);
        while src.counters().read < 2 && Instant::now() < deadline {
            src.poll(Duration::from_millis(50), &mut |e| got.push(e))
                .unwrap();
        }
        let c = src.counters();
        assert_eq!((c.read, c.unparsed), (2, 1), "{:?}", src.log_counters());
        assert!(!got.is_empty());
        let first = &got[0];
        assert_eq!(first.src.to_string(), "198.51.100.7");
        assert_eq!(first.path, "/gallery/1");
        assert_eq!(first.dst_port, 443);
        assert!(
            first.ts_ns >= before,
            "stamped when read, on the kernel clock"
        );
        assert_eq!(src.problem(), None);
        // The newest line's own time (not the read time), and nothing left unread.
        let lag = src.lag().unwrap();
        assert_eq!(lag.newest_line_ns, Some(1_714_564_800 * 1_000_000_000));
        assert_eq!(lag.behind_bytes, 0);
    }

    #[test]
    fn a_missing_log_is_a_problem_not_an_error() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("nginx/*.access.log");
        let mut src = TailedLog::new(&config(path.to_str().unwrap())).unwrap();
        src.poll(Duration::from_millis(10), &mut |_| {}).unwrap();
        let p = src.problem().unwrap();
        assert!(p.contains("no file matches"), "{p}");
    }
}
