//! Pinned data plane: protection outlives the process that set it up, and a new process adopts
//! it (maps, rules, counters, links) without a gap. Needs root.

mod common;

use std::{
    mem::size_of,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use common::{ip, small};
use swarmwall::{AttachMode, Dataplane, RuleSpec, dataplane::remove_pins};
use swarmwall_integration::{
    netns::{NetNs, VethPair, add_addr, add_neigh, in_netns},
    require_root,
    traffic::delivered,
};
use swarmwall_maps::{Config, names};

/// A unique pin directory under bpffs, removed (detaching whatever is pinned) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/swl-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = remove_pins(&self.0);
    }
}

struct Lab {
    link: VethPair,
    srv: NetNs,
    cli: NetNs,
}

fn lab() -> Lab {
    let srv = NetNs::new("swl-pin-s").unwrap();
    let cli = NetNs::new("swl-pin-c").unwrap();
    let link = VethPair::new(&srv, &cli, "198.51.100.1/24", "198.51.100.2/24").unwrap();
    add_addr(&cli, &link.iface_b, "198.51.100.12/24").unwrap();
    // Static neighbours: no ARP crosses the veth, so per-source counts are exact.
    for a in ["198.51.100.2", "198.51.100.12"] {
        add_neigh(&srv, &link.iface_a, ip(a), link.mac_b).unwrap();
    }
    add_neigh(&cli, &link.iface_b, ip("198.51.100.1"), link.mac_a).unwrap();
    Lab { link, srv, cli }
}

/// Sends `n` datagrams from each source; returns what the sink received per source.
fn traffic(lab: &Lab, sources: &[&str], n: usize) -> Vec<u64> {
    let sources: Vec<_> = sources.iter().map(|s| ip(s)).collect();
    delivered(&lab.srv, &lab.cli, ip("198.51.100.1"), &sources, n).unwrap()
}

fn attach(lab: &Lab, dp: &mut Dataplane) -> aya::programs::XdpMode {
    let mode = in_netns(&lab.srv, || dp.attach(&lab.link.iface_a, AttachMode::Auto))
        .unwrap()
        .unwrap();
    dp.pin_links().unwrap();
    mode
}

#[test]
fn pinned_data_plane_outlives_its_process_and_is_adopted() {
    require_root!();
    let lab = lab();
    let pins = PinDir::new();

    let mut first = Dataplane::open_pinned(small(), &pins.0).unwrap();
    assert!(!first.adopted());
    let blocked = first
        .add_rule(RuleSpec::drop("198.51.100.12".parse().unwrap()))
        .unwrap();
    let mode = attach(&lab, &mut first);
    // The process that set it up goes away (as if killed): nothing detaches.
    drop(first);
    assert_eq!(
        traffic(&lab, &["198.51.100.2", "198.51.100.12"], 50),
        vec![50, 0],
        "with no swarmwall process alive, the pinned program must still drop the blocked source"
    );

    // A new process adopts: same rules, same counters, and its program swapped into the link.
    let mut second = Dataplane::open_pinned(
        swarmwall::Sizes {
            sources: 999_999,
            ..small()
        },
        &pins.0,
    )
    .unwrap();
    assert!(second.adopted());
    let rules = second.rules().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].id, blocked);
    assert_eq!(rules[0].hits.dropped_packets, 50);
    let s = second
        .sources()
        .unwrap()
        .into_iter()
        .find(|s| s.addr == Some(ip("198.51.100.12")))
        .expect("counters of the blocked source survive");
    assert_eq!((s.packets, s.dropped), (50, 50));
    assert_eq!(
        attach(&lab, &mut second),
        mode,
        "the pinned link keeps its mode"
    );
    second
        .add_rule(RuleSpec::drop("198.51.100.2".parse().unwrap()))
        .unwrap();
    assert_eq!(
        traffic(&lab, &["198.51.100.2", "198.51.100.12"], 20),
        vec![0, 0]
    );

    // Removing the pins detaches for good.
    drop(second);
    remove_pins(&pins.0).unwrap();
    assert!(!pins.0.exists());
    assert_eq!(
        traffic(&lab, &["198.51.100.2", "198.51.100.12"], 20),
        vec![20, 20]
    );
}

#[test]
fn pins_from_another_abi_are_refused_not_misread() {
    require_root!();
    let pins = PinDir::new();
    drop(Dataplane::open_pinned(small(), &pins.0).unwrap());
    {
        let data = aya::maps::MapData::from_pin(pins.0.join("maps").join(names::CONFIG)).unwrap();
        let mut config: aya::maps::Array<_, Config> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
        let mut c = config.get(&0, 0).unwrap();
        c.abi_version = 999;
        config.set(0, c, 0).unwrap();
    }
    let err = Dataplane::open_pinned(small(), &pins.0)
        .err()
        .expect("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("ABI version 999") && msg.contains("swarmwall down"),
        "{msg}"
    );
}

#[test]
fn a_partial_pin_directory_is_refused() {
    require_root!();
    let pins = PinDir::new();
    drop(Dataplane::open_pinned(small(), &pins.0).unwrap());
    std::fs::remove_file(pins.0.join("maps").join(names::RULES)).unwrap();
    let msg = Dataplane::open_pinned(small(), &pins.0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("some maps are pinned and others are missing"),
        "{msg}"
    );
    let _: IpAddr = ip("192.0.2.1");
}

/// The id of the program in the pinned tail-call slot (a prog array answers lookups with ids).
fn jump_slot(pins: &PinDir) -> u32 {
    let data = aya::maps::MapData::from_pin(pins.0.join("maps").join(names::JUMP)).unwrap();
    let slots: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    slots.get(&swarmwall_maps::JUMP_L7, 0).unwrap()
}

/// Every pinned map's id and the config: what a refused adoption must leave as it found it.
fn pinned_state(pins: &PinDir) -> (Vec<(String, u32)>, Vec<u8>, u32) {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(pins.0.join("maps")).unwrap() {
        let e = e.unwrap();
        let info = aya::maps::MapInfo::from_pin(e.path()).unwrap();
        ids.push((e.file_name().to_string_lossy().into_owned(), info.id()));
    }
    ids.sort();
    let data = aya::maps::MapData::from_pin(pins.0.join("maps").join(names::CONFIG)).unwrap();
    let config: aya::maps::Array<_, Config> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    let c = config.get(&0, 0).unwrap();
    // SAFETY: Config is a plain #[repr(C)] struct without padding (asserted in maps/); reading
    // its bytes is reading initialised memory.
    let bytes = unsafe {
        std::slice::from_raw_parts((&c as *const Config).cast::<u8>(), size_of::<Config>())
    }
    .to_vec();
    (ids, bytes, jump_slot(pins))
}

#[test]
fn a_refused_adoption_changes_nothing_pinned() {
    require_root!();
    let pins = PinDir::new();
    drop(Dataplane::open_pinned(small(), &pins.0).unwrap());
    {
        let data = aya::maps::MapData::from_pin(pins.0.join("maps").join(names::CONFIG)).unwrap();
        let mut config: aya::maps::Array<_, Config> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
        let mut c = config.get(&0, 0).unwrap();
        c.abi_version = swarmwall_maps::ABI_VERSION + 1;
        config.set(0, c, 0).unwrap();
    }
    let before = pinned_state(&pins);
    assert_ne!(
        before.2, 0,
        "the tail-call slot holds the first load's program"
    );
    let err = Dataplane::open_pinned(small(), &pins.0)
        .err()
        .expect("an adoption of another ABI must be refused");
    assert!(err.to_string().contains("ABI version"), "{err}");
    assert_eq!(
        pinned_state(&pins),
        before,
        "the refused adoption changed pinned state (maps, config or the tail-call slot)"
    );
}

#[test]
fn a_counter_reader_reads_what_the_data_plane_reads() {
    require_root!();
    let pins = PinDir::new();
    let dp = Dataplane::open_pinned(small(), &pins.0).unwrap();
    {
        use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
        let data = MapData::from_pin(pins.0.join("maps").join(names::SOURCES)).unwrap();
        let mut lru: PerCpuHashMap<MapData, [u8; 16], swarmwall_maps::SourceCounters> =
            PerCpuHashMap::try_from(Map::PerCpuLruHashMap(data)).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        for i in 0..100u8 {
            let mut per_cpu = vec![swarmwall_maps::SourceCounters::default(); cpus];
            per_cpu[0].packets = 1 + u64::from(i);
            lru.insert(
                swarmwall_maps::v4_mapped([10, 0, 0, i]),
                PerCpuValues::try_from(per_cpu).unwrap(),
                0,
            )
            .unwrap();
        }
    }
    let reader = dp.counter_reader().unwrap();
    let mut direct = dp.sources().unwrap();
    let mut read = reader.sources().unwrap();
    direct.sort_by_key(|s| s.addr);
    read.sort_by_key(|s| s.addr);
    assert_eq!(direct.len(), 100);
    assert_eq!(read, direct);
    // The reader outlives the data plane value (its descriptors are its own).
    drop(dp);
    assert_eq!(reader.sources().unwrap().len(), 100);
}

#[test]
fn maps_an_interrupted_start_left_are_cleared_not_refused() {
    require_root!();
    let pins = PinDir::new();
    // What a start killed before the config was written leaves (builds before `maps-new`):
    // some maps, no config, no link.
    drop(Dataplane::open_pinned(small(), &pins.0).unwrap());
    for name in [names::CONFIG, names::RULES, names::SOURCES] {
        std::fs::remove_file(pins.0.join("maps").join(name)).unwrap();
    }
    let mut dp = Dataplane::open_pinned(small(), &pins.0).unwrap();
    assert!(!dp.adopted(), "a fresh data plane replaces the leftovers");
    let warnings = dp.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("interrupted")),
        "{warnings:?}"
    );
    drop(dp);
    // And a half-built new-style set is cleared too, while a complete one is adopted.
    std::fs::create_dir(pins.0.join("maps-new")).unwrap();
    let dp = Dataplane::open_pinned(small(), &pins.0).unwrap();
    assert!(dp.adopted());
    assert!(!pins.0.join("maps-new").exists());
}

#[test]
fn a_failed_fresh_build_leaves_no_pins() {
    require_root!();
    let pins = PinDir::new();
    // The kernel refuses a map of zero entries: the load fails with some maps already pinned.
    let bad = swarmwall::Sizes {
        sources: 0,
        ..small()
    };
    assert!(Dataplane::open_pinned(bad, &pins.0).is_err());
    for sub in ["maps", "maps-new"] {
        let left = std::fs::read_dir(pins.0.join(sub)).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{sub} has pins after a failed build");
    }
    let dp = Dataplane::open_pinned(small(), &pins.0).unwrap();
    assert!(!dp.adopted());
}
