//! The daemon's L7 pipeline, stage by stage, on the samples the kernel hands it: copying a
//! sample (the floor), parsing it into requests (the reader thread's work), and the whole
//! reader → SPSC queue → detector path on two threads, as the daemon runs it. Prints samples per
//! second and the ratio to the floor measured in the same run. The kernel's default budget is
//! 20,000 samples per second per CPU; the pipeline must keep up with that times the CPU count.

use std::{hint::black_box, thread, time::Instant};

use ringbuf::{
    HeapRb,
    traits::{Consumer as _, Producer as _, Split as _},
};
use swarmwall::{
    addr::to_key,
    detect::{Detector, DetectorConfig},
    l7::from_sample,
};
use swarmwall_maps::{L7_HTTP, L7_SNAP, L7Event};

fn sample(i: u64) -> L7Event {
    let bot = i.is_multiple_of(3);
    let path = if bot {
        format!("/gallery/{}", 1 + (i / 600) % 2)
    } else if i.is_multiple_of(4) {
        format!("/product/{}", i % 40)
    } else {
        format!("/img/p{}-{}.jpg", i % 40, i % 8)
    };
    let ua = if bot {
        "Mozilla/5.0 (compatible; GalleryFetcher/2.1)"
    } else {
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    };
    let text = format!(
        "GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {ua}\r\nAccept: text/html,\
         application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;\
         q=0.5\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n"
    );
    let src = if bot {
        std::net::IpAddr::from([203, 0, 113, (i / 3 % 200) as u8])
    } else {
        std::net::IpAddr::from([198, 51, (i >> 8 & 0x3f) as u8, i as u8])
    };
    let mut data = [0u8; L7_SNAP];
    let n = text.len().min(L7_SNAP);
    data[..n].copy_from_slice(&text.as_bytes()[..n]);
    L7Event {
        ts_ns: i * 20_000,
        src: to_key(src),
        dst: to_key([198, 51, 100, 1].into()),
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 80,
        kind: L7_HTTP,
        flags: swarmwall_maps::L7_FLAG_END,
        len: n as u16,
        offset: 0,
        total: 0,
        _pad: 0,
        data,
    }
}

fn per_sec(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1");
    let n = if quick { 200_000 } else { 2_000_000 };
    let samples: Vec<L7Event> = (0..n as u64).map(sample).collect();

    // Floor: copy each sample out of the buffer, as the reader does, and touch its bytes.
    let t = Instant::now();
    let mut acc = 0u64;
    for s in &samples {
        let copy = black_box(*s);
        acc = acc.wrapping_add(u64::from(copy.data[usize::from(copy.len) - 1]) ^ copy.ts_ns);
    }
    black_box(acc);
    let floor = per_sec(n, t);

    // The reader's work: parse each sample into request events.
    let t = Instant::now();
    let mut requests = 0usize;
    for s in &samples {
        requests += black_box(from_sample(s)).len();
    }
    let parse = per_sec(n, t);
    assert_eq!(requests, n, "every sample is one request");

    // The daemon's path: reader thread parses and pushes, detector thread pops batches of up
    // to 4096 events (as the daemon drains its queue) and observes them.
    let (mut prod, mut cons) = HeapRb::new(65_536).split();
    let t = Instant::now();
    let detector = thread::spawn(move || {
        let mut d = Detector::new(DetectorConfig::default());
        let (mut seen, mut next) = (0usize, 0u64);
        let mut batch: Vec<swarmwall::l7::RequestEvent> = Vec::with_capacity(4096);
        while seen < n {
            batch.extend(cons.pop_iter().take(4096));
            let Some(first) = batch.first() else {
                std::hint::spin_loop();
                continue;
            };
            if first.ts_ns >= next {
                d.tick(first.ts_ns);
                next = first.ts_ns + 250_000_000;
            }
            d.observe_batch(&batch);
            seen += batch.len();
            batch.clear();
        }
        d.swarms().len()
    });
    for s in &samples {
        for mut ev in from_sample(s) {
            // The bench waits where the daemon would count an overflow: it measures capacity.
            while let Err(back) = prod.try_push(ev) {
                ev = back;
                std::hint::spin_loop();
            }
        }
    }
    let swarms = detector.join().expect("detector thread");
    let pipeline = per_sec(n, t);

    println!("L7 pipeline, {n} HTTP samples (~330 bytes each; a third of them a swarm)");
    println!("{:<52} {:>14} {:>10}", "stage", "samples/s", "× floor");
    for (name, rate) in [
        ("floor: copy the sample out", floor),
        ("reader: parse into requests", parse),
        ("reader → SPSC queue → detector (2 threads)", pipeline),
    ] {
        println!("{name:<52} {rate:>14.0} {:>10.4}", rate / floor);
    }
    println!(
        "swarms found: {swarms}; at the kernel's default budget of 20k samples/s per CPU the \
         pipeline keeps up with {:.0} CPUs",
        pipeline / 20_000.0
    );
}
