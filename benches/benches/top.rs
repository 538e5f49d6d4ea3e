//! `swarmwall top` with 1M tracked sources: the cost of each stage, in one run.
//!
//! 1. fill the kernel's LRU hash with 1M distinct sources (written through the pinned map:
//!    one BPF_PROG_TEST_RUN per source would take hours, as each XDP test run waits for an RCU
//!    grace period to swap the XDP dispatcher);
//! 2. read every source's counters from the maps (what the daemon's sampler does, in the
//!    background, once a second or slower);
//! 3. fold the read into the per-source rates;
//! 4. answer a top-20 query from those rates (what `swarmwall top` waits for).
//!
//! Needs root. `SWARMWALL_BENCH_QUICK=1` uses 100k sources.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::Result;
use aya::{
    maps::{Map, MapData, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use swarmwall::{Dataplane, Prog, Sizes, daemon::top::Top, dataplane::remove_pins};
use swarmwall_integration::packets::Frame;
use swarmwall_maps::{SourceCounters, names, v4_mapped};

fn main() -> Result<()> {
    if !swarmwall_integration::netns::is_root() {
        eprintln!("skipping: the top benchmark needs root (BPF_PROG_TEST_RUN)");
        return Ok(());
    }
    let n: u32 = if std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1") {
        100_000
    } else {
        1_000_000
    };
    let pins =
        std::path::PathBuf::from(format!("/sys/fs/bpf/swl-bench-top-{}", std::process::id()));
    let mut dp = Dataplane::open_pinned(
        Sizes {
            sources: n + n / 4,
            exact: 1024,
            prefix: 1024,
            allow: 64,
            rules: 2048,
            cache: 1 << 16,
        },
        &pins,
    )?;
    let base = Frame::udp("10.0.0.0".parse()?, "203.0.113.10".parse()?, 40000, 53)
        .pad_to(64)
        .build();
    let t = Instant::now();
    {
        let data = MapData::from_pin(pins.join("maps").join(names::SOURCES))?;
        let mut lru: PerCpuHashMap<MapData, [u8; 16], SourceCounters> =
            PerCpuHashMap::try_from(Map::PerCpuLruHashMap(data))?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for i in 0..n {
            let o = Ipv4Addr::from((10 << 24) + i).octets();
            let c = SourceCounters {
                packets: 1 + (i % 3) as u64,
                bytes: 64 * (1 + (i % 3) as u64),
                dropped: 0,
                first_seen_ns: 1,
                last_seen_ns: 1,
            };
            let mut per_cpu = vec![SourceCounters::default(); cpus];
            per_cpu[0] = c;
            lru.insert(v4_mapped(o), PerCpuValues::try_from(per_cpu)?, 0)?;
        }
    }
    let fill = t.elapsed();
    let mut frame = base.clone();

    let mut top = Top::default();
    let t = Instant::now();
    let sources = dp.sources()?;
    let read = t.elapsed();
    let t = Instant::now();
    top.update(Instant::now(), &sources);
    let fold1 = t.elapsed();
    // A second read and fold, so the rates are non-zero (a top of zeros would be meaningless).
    frame[26..30].copy_from_slice(&Ipv4Addr::new(10, 0, 0, 7).octets());
    dp.test_run(Prog::Main, &frame, 1000)?;
    let sources = dp.sources()?;
    let t = Instant::now();
    top.update(Instant::now(), &sources);
    let fold2 = t.elapsed();
    let mut queries = Vec::new();
    let mut view = None;
    for _ in 0..5 {
        let t = Instant::now();
        view = Some(top.view("pps", 10.0, 20));
        queries.push(t.elapsed());
    }
    queries.sort();
    let view = view.expect("ran");
    assert_eq!(view.tracked, sources.len());
    assert_eq!(
        view.sources[0].addr, "10.0.0.7",
        "the busiest source comes first"
    );

    println!(
        "swarmwall top with {} tracked sources (filled in {:.2?})",
        sources.len(),
        fill
    );
    println!("{:<46} {:>12}", "stage", "time");
    println!(
        "{:<46} {:>12.2?}",
        "read all counters from the maps (sampler)", read
    );
    println!("{:<46} {:>12.2?}", "fold into rates, first sample", fold1);
    println!("{:<46} {:>12.2?}", "fold into rates, next sample", fold2);
    println!("{:<46} {:>12.2?}", "top-20 query (median of 5)", queries[2]);
    println!(
        "query / sampler read: {:.3} (the query is what `swarmwall top` waits for; target < 100 ms)",
        queries[2].as_secs_f64() / read.as_secs_f64()
    );
    drop(dp);
    remove_pins(&pins)?;
    Ok(())
}
