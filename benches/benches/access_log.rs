//! Access-log parsing throughput on one core, next to a floor that only splits the same bytes
//! into lines (memchr), in one run. The log is a generated scenario (browsing with assets plus a
//! swarm) rendered as nginx writes it, parsed through the same splitter and parser the daemon
//! and `analyze` use; the target is 1M `combined` lines/s.

use std::{hint::black_box, time::Instant};

use swarmwall::sources::log::{Format, LineParser, LineSplitter, MAX_LINE};
use swarmwall_integration::scenarios::{
    COMBINED_WITH_SERVER, LogLayout, SHOP, SHOP6, Scenario, write_access_log,
};

/// The scenario's log, repeated until it holds at least `n` lines.
fn log(layout: LogLayout, n: usize) -> anyhow::Result<(Vec<u8>, usize)> {
    let path = std::env::temp_dir().join(format!("swarmwall-bench-{}.log", std::process::id()));
    write_access_log(Scenario::Swarm, 1, layout, &path)?;
    let one = std::fs::read(&path)?;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(swarmwall_integration::scenarios::labels_path(&path));
    let per = memchr::memchr_iter(b'\n', &one).count().max(1);
    let copies = n.div_ceil(per);
    Ok((one.repeat(copies), per * copies))
}

/// Lines per second of the floor and of the parser over `buf`, best of `rounds`.
fn measure(buf: &[u8], lines: usize, parser: &LineParser, rounds: usize) -> (f64, f64, usize) {
    let (mut floor, mut parse, mut events) = (0f64, 0f64, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut acc = 0usize;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            acc = acc.wrapping_add(black_box(&buf[start..nl]).len());
            start = nl + 1;
        }
        black_box(acc);
        floor = floor.max(lines as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut splitter = LineSplitter::new(MAX_LINE);
        let mut ok = 0;
        // Fed in 256 KiB chunks, as the file source reads.
        for chunk in buf.chunks(256 * 1024) {
            splitter.push(chunk, |line| {
                if let Ok(ev) = line.and_then(|l| parser.parse(l)) {
                    ok += 1;
                    black_box(ev);
                }
            });
        }
        parse = parse.max(lines as f64 / t.elapsed().as_secs_f64());
        events = ok;
    }
    (parse, floor, events)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (n, rounds) = if quick { (200_000, 2) } else { (2_000_000, 3) };
    println!("access-log parsing, one core, at least {n} lines per format, best of {rounds}");
    println!(
        "{:<40} {:>14} {:>14} {:>10} {:>10}",
        "format", "lines/s", "floor/s", "ratio", "events"
    );
    let sites = vec![SHOP, SHOP6];
    for (name, layout, spec) in [
        ("combined", LogLayout::Combined, "combined"),
        (
            "log_format + $host $server_addr $port",
            LogLayout::CombinedWithServer,
            COMBINED_WITH_SERVER,
        ),
    ] {
        let (buf, lines) = log(layout, n)?;
        let parser = LineParser::new(Format::parse(spec, None)?, sites.clone(), Vec::new());
        let (rate, floor, events) = measure(&buf, lines, &parser, rounds);
        println!(
            "{name:<40} {rate:>14.0} {floor:>14.0} {:>10.3} {events:>10}",
            rate / floor
        );
        if events != lines {
            anyhow::bail!("{name}: only {events} of {lines} lines parsed");
        }
    }
    Ok(())
}
