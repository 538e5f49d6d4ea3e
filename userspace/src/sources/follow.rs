//! Following log files the way `tail -F` does: from their end, line by line, through logrotate.
//!
//! A [`Follower`] watches every file a path pattern (globs allowed: `/var/log/nginx/*.access.log`)
//! matches. inotify (through `notify`) wakes it when a file changes, so a line reaches the caller
//! within one poll of being written; a periodic re-scan covers what inotify misses (a watch
//! limit reached, a file system without events). What logrotate does is followed:
//!
//! - `create` (the default): the file is renamed and a new one created under the old name. The
//!   old file stays open and is read to its end for a grace period, since the web server keeps
//!   writing to it until it reopens its logs; the new file is read from its start.
//! - `copytruncate`: the file is copied and cut to zero length in place. A file shorter than the
//!   offset read so far was truncated: reading starts again at its beginning.
//! - A file that appears later (a new virtual host's log, a pattern matching nothing yet) is read
//!   from its start; files present at the first scan from their end.
//!
//! Lines longer than the limit are skipped and counted, never buffered whole: a hostile or broken
//! writer cannot grow memory. A file that cannot be read is a reported error, retried on every
//! scan, never fatal.

use super::log::LineSplitter;
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

/// How long a rotated-away file is still read: the web server writes to it until it reopens its
/// logs (logrotate's `postrotate` signals it).
pub const ROTATED_GRACE: Duration = Duration::from_secs(10);
/// How often files are re-examined without an inotify event.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from one file per read call.
const CHUNK: usize = 64 << 10;

/// Errors that stop a follower from being created.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The path pattern is not a valid glob.
    #[error("log path pattern '{pattern}': {why}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
}

/// What a [`Follower`] has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowStats {
    /// Complete lines handed out.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines skipped for being longer than the limit.
    pub oversize: u64,
    /// Rotations seen (the path now names another file).
    pub rotations: u64,
    /// Truncations seen (`copytruncate`).
    pub truncations: u64,
    /// Files followed now (rotated ones still being read included).
    pub files: usize,
    /// The latest problem reading a file (cleared once every file reads again), e.g.
    /// `/var/log/nginx/access.log: Permission denied`.
    pub error: Option<String>,
    /// True while the pattern matches no file at all.
    pub waiting: bool,
}

/// One open file being read.
struct Followed {
    path: PathBuf,
    file: File,
    /// (device, inode): which file the path named when it was opened.
    id: (u64, u64),
    /// Bytes consumed.
    offset: u64,
    /// Holds the start of a line whose end has not been written yet (bounded).
    lines: LineSplitter,
    /// When it was rotated away (for the grace period).
    rotated_at: Option<Instant>,
}

/// Follows the files a path pattern matches. See the [module docs](self).
pub struct Follower {
    pattern: String,
    glob: Option<glob::Pattern>,
    files: BTreeMap<PathBuf, Followed>,
    rotated: Vec<Followed>,
    stats: FollowStats,
    max_line: usize,
    scanned_once: bool,
    last_scan: Option<Instant>,
    wake: mpsc::Receiver<()>,
    // Kept alive for its watches; `None` when inotify is not available (re-scans still work).
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Follower {
    /// Follows `pattern` (a path; `*`, `?` and `[...]` glob in its last components), handing out
    /// lines up to `max_line` bytes (without their newline).
    pub fn new(pattern: &str, max_line: usize) -> Result<Self, FollowError> {
        let has_glob = pattern.contains(['*', '?', '[']);
        let glob = if has_glob {
            Some(
                glob::Pattern::new(pattern).map_err(|e| FollowError::Pattern {
                    pattern: pattern.to_owned(),
                    why: e.to_string(),
                })?,
            )
        } else {
            None
        };
        if !Path::new(pattern).is_absolute() {
            return Err(FollowError::Pattern {
                pattern: pattern.to_owned(),
                why: "must be an absolute path".into(),
            });
        }
        let (tx, wake) = mpsc::sync_channel(1);
        let watcher = watch_dir(watched_dir(pattern), tx);
        Ok(Self {
            pattern: pattern.to_owned(),
            glob,
            files: BTreeMap::new(),
            rotated: Vec::new(),
            stats: FollowStats::default(),
            max_line,
            scanned_once: false,
            last_scan: None,
            wake,
            _watcher: watcher,
        })
    }

    /// The pattern followed.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// What it has done so far.
    pub fn stats(&self) -> &FollowStats {
        &self.stats
    }

    /// Bytes written to the followed files (rotated ones still being read included) that no
    /// poll has read yet, as the files' sizes say now: how far behind the writer the reader is.
    /// A file that cannot be examined counts as nothing behind; its error is in the stats.
    pub fn behind(&self) -> u64 {
        self.files
            .values()
            .chain(&self.rotated)
            .map(|f| {
                f.file
                    .metadata()
                    .map_or(0, |m| m.len().saturating_sub(f.offset))
            })
            .sum()
    }

    /// Waits up to `timeout` for a change (returning early on an inotify event), then hands every
    /// new complete line to `out` with the file it came from, in file order. The first call
    /// only positions at the end of the files present.
    pub fn poll(&mut self, timeout: Duration, out: &mut dyn FnMut(&Path, &[u8])) {
        if self.scanned_once {
            let woke = self.wake.recv_timeout(timeout).is_ok();
            while self.wake.try_recv().is_ok() {}
            let due = self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
            if !woke && !due {
                return;
            }
        }
        self.scan();
        let mut errors = Vec::new();
        for f in self.rotated.iter_mut() {
            if let Err(e) = read_new(f, &mut self.stats, out) {
                errors.push(format!("{}: {e}", f.path.display()));
            }
        }
        self.rotated
            .retain(|f| f.rotated_at.is_some_and(|t| t.elapsed() < ROTATED_GRACE));
        for f in self.files.values_mut() {
            if let Err(e) = read_new(f, &mut self.stats, out) {
                errors.push(format!("{}: {e}", f.path.display()));
            }
        }
        if !errors.is_empty() {
            self.stats.error = Some(errors.join("; "));
        }
        self.stats.files = self.files.len() + self.rotated.len();
    }

    /// Matches the pattern against the file system and notes rotations, truncations and new
    /// files.
    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let first = !self.scanned_once;
        self.scanned_once = true;
        let mut errors = Vec::new();
        let paths = self.matching(&mut errors);
        self.stats.waiting = paths.is_empty();
        // Files no longer matched (deleted, or renamed without a successor yet) are read out
        // like rotated ones.
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(mut f) = self.files.remove(&p) {
                f.rotated_at = Some(Instant::now());
                self.stats.rotations += 1;
                self.rotated.push(f);
            }
        }
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    errors.push(format!("{}: not a regular file", path.display()));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let id = (meta.dev(), meta.ino());
            match self.files.get_mut(&path) {
                Some(f) if f.id == id => {
                    if meta.len() < f.offset {
                        // copytruncate: the same file, cut short; what is in it now is new.
                        self.stats.truncations += 1;
                        f.offset = 0;
                        f.lines = LineSplitter::new(self.max_line);
                    }
                }
                existing => {
                    if let Some(_old) = existing {
                        // create: the path names a new file; the old one is read out.
                        let mut old = self.files.remove(&path).expect("just found");
                        old.rotated_at = Some(Instant::now());
                        self.stats.rotations += 1;
                        self.rotated.push(old);
                    }
                    match File::open(&path) {
                        Ok(file) => {
                            // Present at the start: from its end, like `tail -F`; new since:
                            // from its start, since all of it was written while we watched.
                            let offset = if first { meta.len() } else { 0 };
                            self.files.insert(
                                path.clone(),
                                Followed {
                                    path,
                                    file,
                                    id,
                                    offset,
                                    lines: LineSplitter::new(self.max_line),
                                    rotated_at: None,
                                },
                            );
                        }
                        Err(e) => errors.push(format!("{}: {e}", path.display())),
                    }
                }
            }
        }
        self.stats.error = (!errors.is_empty()).then(|| errors.join("; "));
    }

    /// The paths the pattern matches now.
    fn matching(&self, errors: &mut Vec<String>) -> Vec<PathBuf> {
        let Some(pattern) = &self.glob else {
            let p = PathBuf::from(&self.pattern);
            return if p.exists() { vec![p] } else { vec![] };
        };
        match glob::glob(pattern.as_str()) {
            Ok(paths) => paths
                .filter_map(|r| match r {
                    Ok(p) => Some(p),
                    Err(e) => {
                        errors.push(e.to_string());
                        None
                    }
                })
                .collect(),
            Err(e) => {
                errors.push(format!("{}: {e}", self.pattern));
                Vec::new()
            }
        }
    }
}

/// Reads what was appended to `f` since its offset and hands out the complete lines.
fn read_new(
    f: &mut Followed,
    stats: &mut FollowStats,
    out: &mut dyn FnMut(&Path, &[u8]),
) -> io::Result<()> {
    f.file.seek(SeekFrom::Start(f.offset))?;
    let mut buf = vec![0; CHUNK];
    loop {
        let n = f.file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        f.offset += n as u64;
        stats.bytes += n as u64;
        let path = &f.path;
        f.lines.push(&buf[..n], |line| match line {
            Ok(l) => {
                stats.lines += 1;
                out(path, l);
            }
            Err(_) => stats.oversize += 1,
        });
    }
}

/// The directory to watch for `pattern`: the deepest one without glob characters.
fn watched_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    for c in Path::new(pattern).components() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            return dir;
        }
        dir.push(c);
    }
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// An inotify watch on `dir` that pokes `tx` on every event (it only wakes the follower, which
/// then looks for itself). `None` if inotify refuses (e.g. the watch limit): scans still run.
fn watch_dir(dir: PathBuf, tx: mpsc::SyncSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut w = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        // A full channel already holds a wake-up.
        let _ = tx.try_send(());
    })
    .map_err(|e| tracing::warn!("log follower: no inotify ({e}); re-scanning every second"))
    .ok()?;
    match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                "log follower: cannot watch ({e}); re-scanning every second"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write as _};

    use tempfile::TempDir;

    use super::*;

    /// The lines one poll hands out, as strings with their file names.
    fn poll(f: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        f.poll(Duration::from_millis(50), &mut |p, l| {
            got.push(format!(
                "{}:{}",
                p.file_name().unwrap().to_string_lossy(),
                String::from_utf8_lossy(l)
            ))
        });
        got
    }

    /// Polls until `n` lines came or a few seconds passed (inotify is quick, but bounded).
    fn poll_n(f: &mut Follower, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < n && Instant::now() < deadline {
            got.extend(poll(f));
        }
        got
    }

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn follower(dir: &TempDir, pattern: &str) -> Follower {
        let p = dir.path().join(pattern);
        Follower::new(p.to_str().unwrap(), 100).unwrap()
    }

    #[test]
    fn starts_at_the_end_and_joins_lines_written_in_pieces() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "old line\n");
        let mut f = follower(&dir, "access.log");
        assert!(poll(&mut f).is_empty(), "what was there before is not news");
        append(&log, "GET /a");
        append(&log, " 200\nGET /b 200\nGET /c");
        assert_eq!(
            poll_n(&mut f, 2),
            ["access.log:GET /a 200", "access.log:GET /b 200"]
        );
        append(&log, " 404\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:GET /c 404"]);
        assert_eq!(f.stats().lines, 3);
    }

    #[test]
    fn behind_counts_what_was_written_and_not_read_yet() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "old line\n");
        let mut f = follower(&dir, "access.log");
        assert!(poll(&mut f).is_empty());
        assert_eq!(f.behind(), 0, "starts at the end");
        append(&log, "one\ntwo\n");
        assert_eq!(f.behind(), 8);
        assert_eq!(poll_n(&mut f, 2), ["access.log:one", "access.log:two"]);
        assert_eq!(f.behind(), 0);
        // A half-written line has been read: it is not behind, only incomplete.
        append(&log, "thr");
        poll(&mut f);
        assert_eq!(f.behind(), 0);
    }

    #[test]
    fn follows_logrotate_create_reading_the_old_file_to_its_end() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "");
        let mut f = follower(&dir, "access.log");
        poll(&mut f);
        append(&log, "one\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:one"]);
        // logrotate renames, the server writes a last line to the old file before it reopens,
        // and a new file appears under the old name.
        let old = dir.path().join("access.log.1");
        std::fs::rename(&log, &old).unwrap();
        append(&log, "three\n");
        append(&old, "two\n");
        let mut got = poll_n(&mut f, 2);
        got.sort();
        assert_eq!(got, ["access.log:three", "access.log:two"]);
        assert_eq!(f.stats().rotations, 1);
        append(&log, "four\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:four"]);
    }

    #[test]
    fn follows_copytruncate_from_the_start_of_the_cut_file() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "");
        let mut f = follower(&dir, "access.log");
        poll(&mut f);
        append(&log, "one\ntwo\n");
        assert_eq!(poll_n(&mut f, 2).len(), 2);
        // copytruncate: copy aside, cut to zero in place; the writer appends at the new end.
        std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        sleep_a_scan();
        append(&log, "x\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:x"]);
        assert_eq!(f.stats().truncations, 1);
    }

    /// Lets a re-scan fall due, so a change with no inotify event in between is seen.
    fn sleep_a_scan() {
        std::thread::sleep(RESCAN_EVERY + Duration::from_millis(50));
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start() {
        let dir = TempDir::new().unwrap();
        let mut f = follower(&dir, "*.access.log");
        assert!(poll(&mut f).is_empty());
        assert!(f.stats().waiting);
        append(&dir.path().join("shop.access.log"), "a\nb\n");
        append(&dir.path().join("other.log"), "not matched\n");
        assert_eq!(
            poll_n(&mut f, 2),
            ["shop.access.log:a", "shop.access.log:b"]
        );
        assert!(!f.stats().waiting);
    }

    #[test]
    fn an_oversize_line_is_skipped_and_counted_without_buffering_it() {
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "");
        let mut f = follower(&dir, "access.log");
        poll(&mut f);
        // Longer than the limit (100) across several writes, then a normal line.
        append(&log, &"x".repeat(80));
        poll(&mut f);
        append(&log, &"y".repeat(80));
        poll(&mut f);
        append(&log, &"z".repeat(80));
        append(&log, "\nok\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:ok"]);
        assert_eq!(f.stats().oversize, 1);
        assert!(f.files.values().all(|x| !x.lines.has_partial()));
    }

    #[test]
    fn an_unreadable_path_is_a_reported_error_not_a_failure() {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("access.log")).unwrap();
        let mut f = follower(&dir, "access.log");
        poll(&mut f);
        let e = f.stats().error.clone().unwrap_or_default();
        assert!(e.contains("access.log: not a regular file"), "{e:?}");
        // It becomes a file: followed from then on, and the error clears.
        std::fs::remove_dir(dir.path().join("access.log")).unwrap();
        append(&dir.path().join("access.log"), "a\n");
        assert_eq!(poll_n(&mut f, 1), ["access.log:a"]);
        assert_eq!(f.stats().error, None);
    }

    #[test]
    fn patterns_are_checked() {
        assert!(Follower::new("relative/access.log", 100).is_err());
        let e = Follower::new("/var/log/[", 100).err().unwrap();
        assert!(e.to_string().contains("'/var/log/['"), "{e}");
        assert_eq!(
            watched_dir("/var/log/nginx/*.log"),
            Path::new("/var/log/nginx")
        );
        assert_eq!(watched_dir("/var/log/*/access.log"), Path::new("/var/log"));
        assert_eq!(
            watched_dir("/var/log/nginx/access.log"),
            Path::new("/var/log/nginx")
        );
    }
}
