//! From a line written to an access log to its request event: the latency of the live log
//! source (`TailedLog`: the inotify follower, the line splitter and the `combined` parser, polled
//! as the daemon's reader thread polls it), next to a floor measured in the same run — a plain
//! loop that re-reads the file as fast as it can and splits lines, with no inotify and no
//! parsing. A writer thread appends lines to a real file at a steady pace, noting when each
//! `write` started; the reader notes when the line's event came out. The target is < 100 ms.
//! Bounded: `LINES` lines per phase and `DEADLINE` per phase.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use swarmwall::sources::{EventSource as _, log::config::LogSourceConfig, tailed::TailedLog};

/// How long one phase may take at most.
const DEADLINE: Duration = Duration::from_secs(60);
/// The daemon's reader polls with this timeout (`daemon::swarms`' `POLL`).
const POLL: Duration = Duration::from_millis(100);

/// The `combined` line numbered `i` (its number is the path).
fn line(i: usize) -> String {
    format!(
        "198.51.100.{} - - [01/May/2024:12:00:00 +0000] \"GET /l/{i} HTTP/1.1\" 200 5120 \"-\" \"bench/1.0\"\n",
        1 + i % 200
    )
}

/// Appends `n` lines to `path`, one every `gap`, noting in `written[i]` when line `i`'s write
/// started (ns after `t0`).
fn writer(
    path: &Path,
    n: usize,
    gap: Duration,
    t0: Instant,
    written: Arc<Vec<AtomicU64>>,
) -> thread::JoinHandle<Result<()>> {
    let path = path.to_owned();
    thread::spawn(move || {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        for i in 0..n {
            let next = t0 + gap * (i as u32 + 1);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            // Noted before the bytes can be seen, so the reader always finds it.
            written[i].store(t0.elapsed().as_nanos() as u64, Ordering::Release);
            f.write_all(line(i).as_bytes())?;
        }
        Ok(())
    })
}

/// Records line `i`'s latency (µs) seen at `now_ns`.
fn record(h: &mut Histogram<u64>, written: &[AtomicU64], i: usize, now_ns: u64) {
    let w = written.get(i).map_or(now_ns, |w| w.load(Ordering::Acquire));
    let us = now_ns.saturating_sub(w) / 1000;
    let _ = h.record(us.max(1));
}

/// The number in a line's `/l/<i>` path.
fn number(path: &[u8]) -> Option<usize> {
    let at = memchr::memmem::find(path, b"/l/")? + 3;
    let end = path[at..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(path.len(), |e| e + at);
    std::str::from_utf8(&path[at..end]).ok()?.parse().ok()
}

fn follower_phase(path: &Path, n: usize, gap: Duration) -> Result<Histogram<u64>> {
    let config = LogSourceConfig {
        path: path.to_str().context("temp path is not UTF-8")?.to_owned(),
        format: "combined".into(),
        fields: None,
        site: vec!["203.0.113.10:443".parse()?],
        trusted_proxies: Vec::new(),
    };
    let mut src = TailedLog::new(&config)?;
    // The first poll positions at the end, as the daemon's does at start.
    src.poll(Duration::from_millis(10), &mut |_| {})?;
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let w = writer(path, n, gap, t0, Arc::clone(&written));
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut seen = 0;
    while seen < n && t0.elapsed() < DEADLINE {
        src.poll(POLL, &mut |ev| {
            if let Some(i) = number(ev.path.as_bytes()) {
                record(&mut h, &written, i, t0.elapsed().as_nanos() as u64);
                seen += 1;
            }
        })?;
    }
    w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if seen < n {
        bail!(
            "the follower gave {seen} of {n} lines within {DEADLINE:?} ({:?}, {:?})",
            src.counters(),
            src.problem()
        );
    }
    Ok(h)
}

fn floor_phase(path: &Path, n: usize, gap: Duration) -> Result<Histogram<u64>> {
    let mut f = File::open(path)?;
    let mut pending = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    // From the end, like the follower.
    f.read_to_end(&mut Vec::new())?;
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let w = writer(path, n, gap, t0, Arc::clone(&written));
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut seen = 0;
    while seen < n && t0.elapsed() < DEADLINE {
        let got = f.read(&mut buf)?;
        if got == 0 {
            thread::yield_now();
            continue;
        }
        let now = t0.elapsed().as_nanos() as u64;
        pending.extend_from_slice(&buf[..got]);
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &pending) {
            if let Some(i) = number(&pending[start..nl]) {
                record(&mut h, &written, i, now);
                seen += 1;
            }
            start = nl + 1;
        }
        pending.drain(..start);
    }
    w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if seen < n {
        bail!("the floor read {seen} of {n} lines within {DEADLINE:?}");
    }
    Ok(h)
}

fn row(name: &str, h: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{name:<34} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.mean() / 1000.0
    );
}

fn main() -> Result<()> {
    let quick = std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (n, gap) = if quick {
        (300, Duration::from_millis(2))
    } else {
        (3000, Duration::from_millis(1))
    };
    let dir = std::env::temp_dir().join(format!("swarmwall-log-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("access.log");
    println!("access log, line written -> request event: {n} lines, one every {gap:?}, per phase");
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "reader", "lines", "p50 ms", "p99 ms", "max ms", "mean ms"
    );
    let result = (|| -> Result<()> {
        std::fs::write(&path, "")?;
        let floor = floor_phase(&path, n, gap)?;
        std::fs::write(&path, "")?;
        let follower = follower_phase(&path, n, gap)?;
        row("floor (busy read loop, split)", &floor);
        row("TailedLog (inotify, parse)", &follower);
        let p99 = follower.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "target: p99 < 100 ms: {}",
            if p99 < 100.0 { "met" } else { "NOT met" }
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
