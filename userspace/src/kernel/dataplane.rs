//! The kernel side, from userspace: load the object, size its maps, attach it, and read and write
//! its maps through typed wrappers.

use std::{
    collections::HashMap as StdHashMap,
    mem::size_of,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::MapInfo,
    maps::{
        Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::Key,
    },
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use swarmwall_maps::{
    ABI_VERSION, Addr, Config, FLAG_CACHE_OFF, GlobalStats, MODE_ENFORCE, MODE_OBSERVE, Rule,
    RuleHits, SourceCounters, SourceSlot, Stat, defaults, names, programs,
};

use crate::{
    addr::{Target, from_key},
    rules::{RuleError, RuleId, RuleSpec},
    table::{Entry, Op, RuleTable},
};

/// The eBPF object, built by `build.rs` from `ebpf/` with the pinned toolchain.
pub static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swarmwall-ebpf"));

/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The object could not be loaded (maps created, relocated).
    #[error("loading the eBPF object failed: {source}{hint}")]
    Load {
        /// The loader's error.
        source: Box<aya::EbpfError>,
        /// Advice, e.g. on missing privileges.
        hint: &'static str,
    },
    /// A program failed to load (verifier) or attach.
    #[error("program {program}: {source}{log}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        source: Box<ProgramError>,
        /// Verifier log, when there is one.
        log: String,
    },
    /// Attaching to an interface failed in every mode tried.
    #[error("attaching XDP to '{iface}' failed: {source}")]
    Attach {
        /// Interface name.
        iface: String,
        /// The last error.
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: Box<MapError>,
    },
    /// The object lacks a map or program it should have.
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        /// "map" or "program".
        what: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// A rule was refused.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// Pinned state that this build cannot use.
    #[error(
        "pinned data plane in {dir}: {problem}; run `swarmwall down` to remove it (this detaches XDP)"
    )]
    Pins {
        /// The pin directory.
        dir: String,
        /// What is wrong.
        problem: String,
    },
    /// A pin directory operation failed.
    #[error("{what} {path}: {source}")]
    PinIo {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A size that cannot work.
    #[error("source cache size {value} is not a power of two of at least 2")]
    CacheSize {
        /// The size given.
        value: u32,
    },
}

const PERM_HINT: &str =
    " (loading BPF programs needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)";

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map,
        source: Box::new(source),
    }
}

/// Map capacities, fixed at load time (the daemon's `[maps]` config table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sizes {
    /// Tracked sources.
    pub sources: u32,
    /// Single-address rule keys.
    pub exact: u32,
    /// Prefix rule keys.
    pub prefix: u32,
    /// Allow-list prefixes.
    pub allow: u32,
    /// Rule slots, shared by exact and prefix rules.
    pub rules: u32,
    /// Source cache slots per CPU; a power of two.
    pub cache: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            sources: defaults::SOURCES,
            exact: defaults::EXACT,
            prefix: defaults::PREFIX,
            allow: defaults::ALLOW,
            rules: defaults::RULES,
            cache: defaults::SRC_CACHE,
        }
    }
}

/// How to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic if the driver refuses.
    #[default]
    Auto,
    /// Native mode only.
    Driver,
    /// Generic (skb) mode only: works on every interface, slower.
    Generic,
}

/// Global mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rules act.
    Enforce,
    /// Rules only count what they would have dropped.
    Observe,
}

/// Which program of the object to run in [`Dataplane::test_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    /// The data plane.
    Main,
    /// The trivial `XDP_PASS` floor.
    Floor,
}

/// Result of a `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug)]
pub struct RunResult {
    /// XDP action returned (1 = drop, 2 = pass).
    pub action: u32,
    /// Average time per run, as the kernel measured it.
    pub per_packet: Duration,
}

/// Summed per-source counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Source address.
    pub addr: Option<IpAddr>,
    /// Packets seen, including dropped ones.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// First packet, kernel monotonic ns (0 if only known from an exact rule's hits).
    pub first_seen_ns: u64,
    /// Latest packet, kernel monotonic ns.
    pub last_seen_ns: u64,
}

/// A rule with its live counters.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    /// Rule id.
    pub id: RuleId,
    /// The rule.
    pub entry: Entry,
    /// Hits summed over CPUs.
    pub hits: RuleHits,
}

/// How the data plane holds one interface's XDP link.
enum LinkHandle {
    /// Owned by the program object: detached when it is dropped, unless also pinned.
    Owned(XdpLinkId),
    /// Pinned in bpffs: survives this process; detached only by unpinning.
    Pinned(PinnedLink),
}

/// One attached interface.
struct Attachment {
    iface: String,
    mode: XdpMode,
    handle: LinkHandle,
    /// Pin file of the link, if pinned (also for an adopted link held as `Owned`).
    pin: Option<PathBuf>,
}

/// The loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    table: RuleTable,
    links: Vec<Attachment>,
    pin_dir: Option<PathBuf>,
    adopted: bool,
    warnings: Vec<String>,
}

/// Every map of the object with the sizes of its key and value: what adopting a pinned map
/// checks, since the kernel would otherwise happily hand back a map of another layout.
const MAP_LAYOUT: [(&str, usize, usize); 16] = [
    (names::CONFIG, 4, size_of::<Config>()),
    (names::STATS, 4, size_of::<GlobalStats>()),
    (names::SOURCES, 16, size_of::<SourceCounters>()),
    (names::ALLOW, 20, 8),
    (names::ALLOW_FILTER, 4, 8),
    (names::EXACT, 16, 4),
    (names::PREFIX, 20, 4),
    (names::PREFIX_FILTER, 4, 8),
    (names::RULES, 4, size_of::<Rule>()),
    (names::RULE_HITS, 4, size_of::<RuleHits>()),
    (names::SRC_CACHE, 4, size_of::<SourceSlot>()),
    (names::CLOCK, 4, size_of::<swarmwall_maps::ClockCache>()),
    (names::L7_BUDGET, 4, size_of::<swarmwall_maps::L7Budget>()),
    // A ring buffer has neither keys nor values.
    (names::L7_EVENTS, 0, 0),
    (names::L7_META, 4, size_of::<swarmwall_maps::L7Meta>()),
    (names::JUMP, 4, 4),
];

/// Where an interface's link is pinned: `links/<mode>/<iface>`. bpffs refuses names with a dot
/// (EPERM), and interface names may have one (`eth0.100`) but never a colon, so dots become
/// colons.
fn link_pin(dir: &Path, iface: &str, mode: XdpMode) -> PathBuf {
    let mode = if mode == XdpMode::Skb {
        "generic"
    } else {
        "driver"
    };
    dir.join("links").join(mode).join(iface.replace('.', ":"))
}

fn pin_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let path = path.display().to_string();
    move |source| DataplaneError::PinIo { what, path, source }
}

/// Detaches and removes everything pinned under `dir` (links first, then maps); returns what it
/// removed. Works without loading anything, so it also clears a data plane whose daemon is gone.
pub fn remove_pins(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let mut removed = Vec::new();
    for sub in ["links/driver", "links/generic", "links", "maps"] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(pin_err("reading", &d)(e)),
        };
        for entry in entries {
            let path = entry.map_err(pin_err("reading", &d))?.path();
            // Unlinking the pin drops the kernel's last reference once our fds are closed too.
            std::fs::remove_file(&path).map_err(pin_err("removing", &path))?;
            removed.push(path.display().to_string());
        }
        let _ = std::fs::remove_dir(&d);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

/// Drains the kernel's L7 event ring buffer.
pub struct L7Reader {
    ring: aya::maps::RingBuf<MapData>,
}

impl L7Reader {
    /// The next event, if one is waiting (never blocks).
    pub fn next_event(&mut self) -> Option<swarmwall_maps::L7Event> {
        let item = self.ring.next()?;
        if item.len() < size_of::<swarmwall_maps::L7Event>() {
            return None;
        }
        // SAFETY: the record is at least one L7Event long, L7Event is Pod (any bytes valid),
        // and read_unaligned makes no alignment assumption.
        Some(unsafe {
            item.as_ptr()
                .cast::<swarmwall_maps::L7Event>()
                .read_unaligned()
        })
    }

    /// The ring buffer's fd, to wait on with epoll/`AsyncFd`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.ring)
    }
}

/// The kernel's monotonic clock in ns: the clock rule expiry and first/last seen use.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Dataplane {
    /// Loads the object with the given map sizes and loads (verifies) its programs. Nothing is
    /// pinned: everything goes away with this value.
    pub fn load(sizes: Sizes) -> Result<Self, DataplaneError> {
        Self::load_with(sizes, None)
    }

    /// Loads the object with its maps pinned under `dir/maps` and links under `dir/links`, so the
    /// data plane keeps enforcing after this process exits. If `dir` already holds a data plane
    /// (a previous daemon's), adopts it: its maps, counters, rules and mode are kept, and
    /// [`Dataplane::attach`] swaps the new program into its links atomically.
    pub fn open_pinned(sizes: Sizes, dir: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(sizes, Some(dir))
    }

    fn load_with(mut sizes: Sizes, dir: Option<&Path>) -> Result<Self, DataplaneError> {
        if sizes.cache < 2 || !sizes.cache.is_power_of_two() {
            return Err(DataplaneError::CacheSize { value: sizes.cache });
        }
        let mut warnings = Vec::new();
        let mut adopted = false;
        let mut pin_paths = Vec::new();
        if let Some(dir) = dir {
            ensure_bpffs(dir)?;
            let maps = dir.join("maps");
            std::fs::create_dir_all(&maps).map_err(pin_err("creating", &maps))?;
            for mode in ["driver", "generic"] {
                let d = dir.join("links").join(mode);
                std::fs::create_dir_all(&d).map_err(pin_err("creating", &d))?;
            }
            let present: Vec<bool> = MAP_LAYOUT
                .iter()
                .map(|(n, _, _)| maps.join(n).exists())
                .collect();
            adopted = present.iter().all(|p| *p);
            if !adopted && present.iter().any(|p| *p) {
                return Err(DataplaneError::Pins {
                    dir: dir.display().to_string(),
                    problem: "some maps are pinned and others are missing".into(),
                });
            }
            if adopted {
                sizes = adopted_sizes(dir, &maps)?;
            }
            pin_paths = MAP_LAYOUT
                .iter()
                .map(|(n, _, _)| (*n, maps.join(n)))
                .collect();
        }
        let mut loader = EbpfLoader::new();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(names::SOURCES, sizes.sources)
            .map_max_entries(names::EXACT, sizes.exact)
            .map_max_entries(names::PREFIX, sizes.prefix)
            .map_max_entries(names::ALLOW, sizes.allow)
            .map_max_entries(names::RULES, sizes.rules)
            .map_max_entries(names::RULE_HITS, sizes.rules)
            .map_max_entries(names::SRC_CACHE, sizes.cache);
        let mut ebpf = loader.load(OBJECT).map_err(|source| {
            let hint = if source.to_string().contains("Operation not permitted") {
                PERM_HINT
            } else {
                ""
            };
            DataplaneError::Load {
                source: Box::new(source),
                hint,
            }
        })?;
        for name in [programs::XDP, programs::FLOOR, programs::L7] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing {
                    what: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| program_err(name, source))?;
            prog.load().map_err(|source| program_err(name, source))?;
        }
        // The sampling program is reached by tail call; (re)point the slot at this build's.
        {
            let fd = ebpf
                .program(programs::L7)
                .ok_or(DataplaneError::Missing {
                    what: "program",
                    name: programs::L7,
                })?
                .fd()
                .map_err(|source| program_err(programs::L7, source))?
                .try_clone()
                .map_err(|e| map_err(names::JUMP)(MapError::IoError(e)))?;
            let map = ebpf.map_mut(names::JUMP).ok_or(DataplaneError::Missing {
                what: "map",
                name: names::JUMP,
            })?;
            let mut jump: aya::maps::ProgramArray<&mut MapData> =
                aya::maps::ProgramArray::try_from(map).map_err(map_err(names::JUMP))?;
            jump.set(swarmwall_maps::JUMP_L7, &fd, 0)
                .map_err(map_err(names::JUMP))?;
        }
        let mut dp = Self {
            ebpf,
            table: RuleTable::new(sizes.rules),
            links: Vec::new(),
            pin_dir: dir.map(Path::to_path_buf),
            adopted,
            warnings: Vec::new(),
        };
        if adopted {
            let c = dp.config()?;
            if c.abi_version != ABI_VERSION {
                return Err(DataplaneError::Pins {
                    dir: dir.map_or(String::new(), |d| d.display().to_string()),
                    problem: format!(
                        "its maps have ABI version {} and this build needs {ABI_VERSION}",
                        c.abi_version
                    ),
                });
            }
            warnings.extend(dp.restore_table(sizes.rules)?);
        } else {
            let mut config = Config::new();
            config.hash_seed = random_u32();
            config.cache_mask = sizes.cache - 1;
            dp.write_config(config)?;
        }
        dp.warnings = warnings;
        Ok(dp)
    }

    /// Attaches the data plane to an interface; returns the mode it got. With pins, an interface
    /// that already has a pinned swarmwall link gets the new program swapped in atomically (no
    /// moment without XDP), keeping the link's mode; a new link is pinned.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<XdpMode, DataplaneError> {
        if let Some(dir) = self.pin_dir.clone() {
            for m in [XdpMode::Driver, XdpMode::Skb] {
                let path = link_pin(&dir, iface, m);
                if !path.exists() {
                    continue;
                }
                let pinned = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Pins {
                    dir: dir.display().to_string(),
                    problem: format!("cannot open pinned link {}: {e}", path.display()),
                })?;
                let link =
                    XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataplaneError::Pins {
                        dir: dir.display().to_string(),
                        problem: format!("{} is not an XDP link: {e}", path.display()),
                    })?;
                let id = self
                    .xdp(programs::XDP)?
                    .attach_to_link(link)
                    .map_err(|source| program_err(programs::XDP, source))?;
                self.links.push(Attachment {
                    iface: iface.to_owned(),
                    mode: m,
                    handle: LinkHandle::Owned(id),
                    pin: Some(path),
                });
                return Ok(m);
            }
        }
        self.attach_fresh(iface, mode)
    }

    /// Pins the links of fresh attachments (with a pin directory), so they outlive this process.
    /// Separate from [`Dataplane::attach`] because attaching may happen on a thread that entered
    /// another network namespace, while pins belong to this process's BPF filesystem.
    pub fn pin_links(&mut self) -> Result<(), DataplaneError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        let links = std::mem::take(&mut self.links);
        let mut result = Ok(());
        for mut a in links {
            if a.pin.is_some() || result.is_err() {
                self.links.push(a);
                continue;
            }
            let path = link_pin(&dir, &a.iface, a.mode);
            a.handle = match a.handle {
                LinkHandle::Owned(id) => match self.pin_one(&dir, &a.iface, id, &path) {
                    Ok(pinned) => {
                        a.pin = Some(path);
                        LinkHandle::Pinned(pinned)
                    }
                    Err(e) => {
                        // The link went with take_link; it stays attached until we exit.
                        result = Err(e);
                        continue;
                    }
                },
                pinned => pinned,
            };
            self.links.push(a);
        }
        result
    }

    fn pin_one(
        &mut self,
        dir: &Path,
        iface: &str,
        id: XdpLinkId,
        path: &Path,
    ) -> Result<PinnedLink, DataplaneError> {
        let link = self
            .xdp(programs::XDP)?
            .take_link(id)
            .map_err(|source| program_err(programs::XDP, source))?;
        let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Pins {
            dir: dir.display().to_string(),
            problem: format!(
                "kernel gave no bpf_link for {iface} ({e}); Linux 5.9+ is needed to pin"
            ),
        })?;
        fd.pin(path).map_err(|e| DataplaneError::Pins {
            dir: dir.display().to_string(),
            problem: format!("pinning {}: {e:?}", path.display()),
        })
    }

    fn attach_fresh(&mut self, iface: &str, mode: AttachMode) -> Result<XdpMode, DataplaneError> {
        let tries: &[XdpMode] = match mode {
            AttachMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
            AttachMode::Driver => &[XdpMode::Driver],
            AttachMode::Generic => &[XdpMode::Skb],
        };
        let prog = self.xdp(programs::XDP)?;
        let mut last = None;
        for m in tries {
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if mode == AttachMode::Auto && *m == XdpMode::Skb {
                        tracing::warn!(
                            iface,
                            "driver refused native XDP; attached in generic (skb) mode, which is slower"
                        );
                    }
                    self.links.push(Attachment {
                        iface: iface.to_owned(),
                        mode: *m,
                        handle: LinkHandle::Owned(id),
                        pin: None,
                    });
                    return Ok(*m);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(DataplaneError::Attach {
            iface: iface.to_owned(),
            source: Box::new(last.expect("at least one mode tried")),
        })
    }

    /// Interfaces attached to, with their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, XdpMode)> {
        self.links.iter().map(|a| (a.iface.as_str(), a.mode))
    }

    /// True if this data plane was adopted from pins left by an earlier process.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The pin directory, if pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Problems found while adopting pinned state (already worked around), for the log.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Detaches from every interface, pinned or not. Maps stay pinned; see [`remove_pins`].
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let links = std::mem::take(&mut self.links);
        for a in links {
            if let Some(pin) = &a.pin {
                match std::fs::remove_file(pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(pin_err("removing", pin)(e)),
                }
            }
            match a.handle {
                LinkHandle::Owned(id) => self
                    .xdp(programs::XDP)?
                    .detach(id)
                    .map_err(|source| program_err(programs::XDP, source))?,
                // With the pin gone, dropping the last fd detaches.
                LinkHandle::Pinned(p) => drop(FdLink::from(p)),
            }
        }
        Ok(())
    }

    /// Runs a program once per `repeat` over `frame` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(
        &mut self,
        which: Prog,
        frame: &[u8],
        repeat: u32,
    ) -> Result<RunResult, DataplaneError> {
        let name = match which {
            Prog::Main => programs::XDP,
            Prog::Floor => programs::FLOOR,
        };
        let prog = self.xdp(name)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = prog
            .test_run(opts)
            .map_err(|source| program_err(name, source))?;
        Ok(RunResult {
            action: r.return_value,
            per_packet: r.duration,
        })
    }

    /// Sets the global mode.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), DataplaneError> {
        let mut c = self.config()?;
        c.mode = match mode {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Observe => MODE_OBSERVE,
        };
        self.write_config(c)
    }

    /// Bypasses (or restores) the source cache, so every packet takes the cold path: for
    /// measuring that path. Counts stay exact either way.
    pub fn set_cache_bypass(&mut self, off: bool) -> Result<(), DataplaneError> {
        let mut c = self.config()?;
        c.flags = if off {
            c.flags | FLAG_CACHE_OFF
        } else {
            c.flags & !FLAG_CACHE_OFF
        };
        self.write_config(c)
    }

    /// Sets which destination ports have their HTTP requests (at most 4) and TLS hellos (at
    /// most 2) sampled into the L7 ring buffer, and the per-CPU budget in events per second
    /// (0 turns sampling off).
    pub fn set_l7(
        &mut self,
        http_ports: &[u16],
        tls_ports: &[u16],
        rate: u32,
    ) -> Result<(), DataplaneError> {
        let mut c = self.config()?;
        c.http_ports = [0; 4];
        c.tls_ports = [0; 2];
        for (d, p) in c.http_ports.iter_mut().zip(http_ports) {
            *d = *p;
        }
        for (d, p) in c.tls_ports.iter_mut().zip(tls_ports) {
            *d = *p;
        }
        c.l7_rate = rate;
        self.write_config(c)
    }

    /// Takes the L7 event ring buffer out of the data plane, for a reader thread to drain.
    /// Can be taken once.
    pub fn take_l7_reader(&mut self) -> Result<L7Reader, DataplaneError> {
        let map = self
            .ebpf
            .take_map(names::L7_EVENTS)
            .ok_or(DataplaneError::Missing {
                what: "map",
                name: names::L7_EVENTS,
            })?;
        let ring = aya::maps::RingBuf::try_from(map).map_err(map_err(names::L7_EVENTS))?;
        Ok(L7Reader { ring })
    }

    /// The global mode.
    pub fn mode(&self) -> Result<Mode, DataplaneError> {
        Ok(if self.config()?.mode == MODE_OBSERVE {
            Mode::Observe
        } else {
            Mode::Enforce
        })
    }

    /// True if an allow-list entry overlaps `target`. The kernel lets the allow list win anyway;
    /// callers use this to refuse such rules as likely mistakes (unless forced).
    pub fn covers_allowed(&self, target: &Target) -> bool {
        self.table.allow_overlaps(target)
    }

    /// Adds a rule.
    pub fn add_rule(&mut self, spec: RuleSpec) -> Result<RuleId, DataplaneError> {
        let (id, ops) = self.table.add(spec, monotonic_ns())?;
        self.apply(&ops)?;
        Ok(id)
    }

    /// Removes a rule.
    pub fn remove_rule(&mut self, id: RuleId) -> Result<(), DataplaneError> {
        let ops = self.table.remove(id)?;
        self.apply(&ops)
    }

    /// Removes rules whose expiry has passed (the kernel already ignores them); returns their ids.
    pub fn remove_expired(&mut self) -> Result<Vec<RuleId>, DataplaneError> {
        let ids = self.table.expired(monotonic_ns());
        for id in &ids {
            self.remove_rule(*id)?;
        }
        Ok(ids)
    }

    /// Adds an allow-list entry.
    pub fn allow(&mut self, target: Target) -> Result<(), DataplaneError> {
        let ops = self.table.allow(target)?;
        self.apply(&ops)
    }

    /// Removes an allow-list entry.
    pub fn disallow(&mut self, target: Target) -> Result<(), DataplaneError> {
        let ops = self.table.disallow(target)?;
        self.apply(&ops)
    }

    /// Allow-list entries.
    pub fn allowed(&self) -> Vec<Target> {
        self.table.allowed().copied().collect()
    }

    /// Rules with their hit counters.
    pub fn rules(&self) -> Result<Vec<RuleInfo>, DataplaneError> {
        let hits = self.hits_map()?;
        self.table
            .rules()
            .map(|(id, entry)| {
                Ok(RuleInfo {
                    id,
                    entry: entry.clone(),
                    hits: slot_hits(&hits, entry.slot)?,
                })
            })
            .collect()
    }

    /// The hits of the rules among `ids` that are in the table (one lookup each; cheaper than
    /// [`Dataplane::rules`] when only a few rules matter).
    pub fn rule_hits(
        &self,
        ids: impl IntoIterator<Item = RuleId>,
    ) -> Result<Vec<(RuleId, RuleHits)>, DataplaneError> {
        let hits = self.hits_map()?;
        ids.into_iter()
            .filter_map(|id| self.table.get(id).map(|e| (id, e.slot)))
            .map(|(id, slot)| Ok((id, slot_hits(&hits, slot)?)))
            .collect()
    }

    /// Global counters summed over CPUs.
    pub fn stats(&self) -> Result<GlobalStats, DataplaneError> {
        let map: PerCpuArray<&MapData, GlobalStats> =
            PerCpuArray::try_from(self.map(names::STATS)?).map_err(map_err(names::STATS))?;
        let per_cpu = map.get(&0, 0).map_err(map_err(names::STATS))?;
        let mut total = GlobalStats {
            counters: [0; swarmwall_maps::STAT_COUNT],
        };
        for cpu in per_cpu.iter() {
            for (t, c) in total.counters.iter_mut().zip(cpu.counters) {
                *t += c;
            }
        }
        Ok(total)
    }

    /// One global counter.
    pub fn stat(&self, stat: Stat) -> Result<u64, DataplaneError> {
        Ok(self.stats()?.counters[stat as usize])
    }

    /// Per-source counters summed over CPUs: the LRU hash's flushed totals plus the deltas still
    /// held in each CPU's source cache.
    pub fn sources(&self) -> Result<Vec<SourceStats>, DataplaneError> {
        let mut out: StdHashMap<Addr, SourceStats> = StdHashMap::new();
        let mut add = |key: Addr, c: &SourceCounters| {
            let s = out.entry(key).or_insert_with(|| SourceStats {
                addr: Some(from_key(&key)),
                ..SourceStats::default()
            });
            s.packets += c.packets;
            s.bytes += c.bytes;
            s.dropped += c.dropped;
            if c.first_seen_ns != 0 && (s.first_seen_ns == 0 || c.first_seen_ns < s.first_seen_ns) {
                s.first_seen_ns = c.first_seen_ns;
            }
            s.last_seen_ns = s.last_seen_ns.max(c.last_seen_ns);
        };
        for (key, per_cpu) in self.lru_entries()? {
            for c in &per_cpu {
                add(key, c);
            }
        }
        for slot in self.cache_slots()? {
            if slot.counters.packets != 0 {
                add(slot.addr, &slot.counters);
            }
        }
        out.retain(|_, s| s.packets != 0);
        Ok(out.into_values().collect())
    }

    /// Rebuilds the rule table from the adopted maps.
    fn restore_table(&mut self, capacity: u32) -> Result<Vec<String>, DataplaneError> {
        let exact: Vec<(Addr, u32)> = {
            let m: HashMap<&MapData, Addr, u32> =
                HashMap::try_from(self.map(names::EXACT)?).map_err(map_err(names::EXACT))?;
            m.iter().filter_map(Result::ok).collect()
        };
        let prefixes: Vec<(Addr, u32, u32)> = {
            let m: LpmTrie<&MapData, Addr, u32> =
                LpmTrie::try_from(self.map(names::PREFIX)?).map_err(map_err(names::PREFIX))?;
            m.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (k.data(), k.prefix_len(), v))
                .collect()
        };
        let allow: Vec<(Addr, u32, u64)> = {
            let m: LpmTrie<&MapData, Addr, u64> =
                LpmTrie::try_from(self.map(names::ALLOW)?).map_err(map_err(names::ALLOW))?;
            m.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (k.data(), k.prefix_len(), v))
                .collect()
        };
        let rules: Array<&MapData, Rule> =
            Array::try_from(self.map(names::RULES)?).map_err(map_err(names::RULES))?;
        let (table, warnings) = RuleTable::restore(capacity, &exact, &prefixes, &allow, |slot| {
            rules.get(&slot, 0).ok()
        });
        self.table = table;
        Ok(warnings)
    }

    /// Adds a rule under the rule store's id.
    pub fn add_rule_as(&mut self, id: RuleId, spec: RuleSpec) -> Result<(), DataplaneError> {
        let (_, ops) = self.table.add_as(id, spec, monotonic_ns())?;
        self.apply(&ops)
    }

    /// The rule table (what the kernel maps hold).
    pub fn table(&self) -> &RuleTable {
        &self.table
    }

    /// Every CPU's source cache slots: batched where the kernel can, else one by one.
    fn cache_slots(&self) -> Result<Vec<SourceSlot>, DataplaneError> {
        let map = self.map(names::SRC_CACHE)?;
        if let aya::maps::Map::PerCpuArray(data) = map {
            let ncpus =
                nr_cpus().map_err(|(_, e)| map_err(names::SRC_CACHE)(MapError::IoError(e)))?;
            if let Ok(v) = super::batch::lookup_all_percpu::<u32, SourceSlot>(
                std::os::fd::AsFd::as_fd(data.fd()),
                ncpus,
            ) {
                return Ok(v.into_iter().flat_map(|(_, per_cpu)| per_cpu).collect());
            }
        }
        let cache: PerCpuArray<&MapData, SourceSlot> =
            PerCpuArray::try_from(map).map_err(map_err(names::SRC_CACHE))?;
        let mut out = Vec::new();
        for per_cpu in cache.iter() {
            out.extend(per_cpu.map_err(map_err(names::SRC_CACHE))?.iter().copied());
        }
        Ok(out)
    }

    /// Every entry of the per-source LRU hash: batched where the kernel can, else one by one.
    fn lru_entries(&self) -> Result<Vec<(Addr, Vec<SourceCounters>)>, DataplaneError> {
        let map = self.map(names::SOURCES)?;
        if let aya::maps::Map::PerCpuLruHashMap(data) = map {
            let ncpus =
                nr_cpus().map_err(|(_, e)| map_err(names::SOURCES)(MapError::IoError(e)))?;
            match super::batch::lookup_all_percpu::<Addr, SourceCounters>(
                std::os::fd::AsFd::as_fd(data.fd()),
                ncpus,
            ) {
                Ok(v) => return Ok(v),
                Err(e) => tracing::debug!("batch lookup unavailable ({e}); reading entry by entry"),
            }
        }
        let lru: PerCpuHashMap<&MapData, Addr, SourceCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err(names::SOURCES))?;
        let mut out = Vec::new();
        for item in lru.iter() {
            match item {
                Ok((k, v)) => out.push((k, v.iter().copied().collect())),
                // An LRU entry evicted between key and value reads: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(names::SOURCES)(e)),
            }
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.apply_ops(ops)?;
        // Cached lookups in the kernel predate these writes: invalidate them all at once.
        let mut c = self.config()?;
        c.rules_gen = match c.rules_gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        self.write_config(c)
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let ncpu = nr_cpus().map_err(|(_, e)| map_err(names::RULE_HITS)(MapError::IoError(e)))?;
        for op in ops {
            match op {
                Op::ClearHits { slot } => {
                    let values = PerCpuValues::try_from(vec![RuleHits::default(); ncpu])
                        .map_err(|e| map_err(names::RULE_HITS)(MapError::IoError(e)))?;
                    let mut m: PerCpuArray<&mut MapData, RuleHits> =
                        PerCpuArray::try_from(self.map_mut(names::RULE_HITS)?)
                            .map_err(map_err(names::RULE_HITS))?;
                    m.set(*slot, values, 0).map_err(map_err(names::RULE_HITS))?;
                }
                Op::SetRule { slot, rule } => {
                    let mut m: Array<&mut MapData, Rule> =
                        Array::try_from(self.map_mut(names::RULES)?)
                            .map_err(map_err(names::RULES))?;
                    m.set(*slot, rule, 0).map_err(map_err(names::RULES))?;
                }
                Op::SetExact { key, head } => {
                    let mut m: HashMap<&mut MapData, Addr, u32> =
                        HashMap::try_from(self.map_mut(names::EXACT)?)
                            .map_err(map_err(names::EXACT))?;
                    m.insert(key, head, 0).map_err(map_err(names::EXACT))?;
                }
                Op::DelExact { key } => {
                    let mut m: HashMap<&mut MapData, Addr, u32> =
                        HashMap::try_from(self.map_mut(names::EXACT)?)
                            .map_err(map_err(names::EXACT))?;
                    m.remove(key).map_err(map_err(names::EXACT))?;
                }
                Op::SetPrefix { key, len, head } => {
                    let mut m: LpmTrie<&mut MapData, Addr, u32> =
                        LpmTrie::try_from(self.map_mut(names::PREFIX)?)
                            .map_err(map_err(names::PREFIX))?;
                    m.insert(&Key::new(*len, *key), head, 0)
                        .map_err(map_err(names::PREFIX))?;
                }
                Op::DelPrefix { key, len } => {
                    let mut m: LpmTrie<&mut MapData, Addr, u32> =
                        LpmTrie::try_from(self.map_mut(names::PREFIX)?)
                            .map_err(map_err(names::PREFIX))?;
                    m.remove(&Key::new(*len, *key))
                        .map_err(map_err(names::PREFIX))?;
                }
                Op::PrefixFilter { word, value } => {
                    self.set_word(names::PREFIX_FILTER, *word, *value)?
                }
                Op::AllowFilter { word, value } => {
                    self.set_word(names::ALLOW_FILTER, *word, *value)?
                }
                Op::SetAllow { key, len, id } => {
                    let mut m: LpmTrie<&mut MapData, Addr, u64> =
                        LpmTrie::try_from(self.map_mut(names::ALLOW)?)
                            .map_err(map_err(names::ALLOW))?;
                    m.insert(&Key::new(*len, *key), id, 0)
                        .map_err(map_err(names::ALLOW))?;
                }
                Op::DelAllow { key, len } => {
                    let mut m: LpmTrie<&mut MapData, Addr, u64> =
                        LpmTrie::try_from(self.map_mut(names::ALLOW)?)
                            .map_err(map_err(names::ALLOW))?;
                    m.remove(&Key::new(*len, *key))
                        .map_err(map_err(names::ALLOW))?;
                }
            }
        }
        Ok(())
    }

    fn set_word(
        &mut self,
        name: &'static str,
        word: u32,
        value: u64,
    ) -> Result<(), DataplaneError> {
        let mut m: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.set(word, value, 0).map_err(map_err(name))
    }

    fn config(&self) -> Result<Config, DataplaneError> {
        let m: Array<&MapData, Config> =
            Array::try_from(self.map(names::CONFIG)?).map_err(map_err(names::CONFIG))?;
        m.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    fn write_config(&mut self, mut c: Config) -> Result<(), DataplaneError> {
        c.abi_version = ABI_VERSION;
        let mut m: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(names::CONFIG)?).map_err(map_err(names::CONFIG))?;
        m.set(0, c, 0).map_err(map_err(names::CONFIG))
    }

    fn hits_map(&self) -> Result<PerCpuArray<&MapData, RuleHits>, DataplaneError> {
        PerCpuArray::try_from(self.map(names::RULE_HITS)?).map_err(map_err(names::RULE_HITS))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf
            .map(name)
            .ok_or(DataplaneError::Missing { what: "map", name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { what: "map", name })
    }

    fn xdp(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing {
                what: "program",
                name,
            })?
            .try_into()
            .map_err(|source| program_err(name, source))
    }
}

/// Where systemd (and bpftool) mount the BPF filesystem.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `dir` will be on a BPF filesystem: pins only live there. Mounts bpffs on
/// `/sys/fs/bpf` if nothing is mounted there (as bpftool does; systemd normally has); refuses a
/// pin directory elsewhere that is not on bpffs.
fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let is_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && existing.starts_with(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .map_err(|e| DataplaneError::Pins {
            dir: dir.display().to_string(),
            problem: format!("no BPF filesystem on {BPFFS_ROOT} and mounting one failed: {e}"),
        })?;
        tracing::info!("mounted the BPF filesystem on {BPFFS_ROOT}");
        return Ok(());
    }
    Err(DataplaneError::Pins {
        dir: dir.display().to_string(),
        problem: format!(
            "{} is not on a BPF filesystem (mount one: mount -t bpf bpf {BPFFS_ROOT})",
            existing.display()
        ),
    })
}

/// The sizes of an adopted data plane are those of its pinned maps, whatever was asked for.
fn adopted_sizes(dir: &Path, maps: &Path) -> Result<Sizes, DataplaneError> {
    let bad = |problem: String| DataplaneError::Pins {
        dir: dir.display().to_string(),
        problem,
    };
    let mut entries = StdHashMap::new();
    for (name, key, value) in MAP_LAYOUT {
        let info = MapInfo::from_pin(maps.join(name))
            .map_err(|e| bad(format!("cannot open pinned map {name}: {e}")))?;
        if info.key_size() as usize != key || info.value_size() as usize != value {
            return Err(bad(format!(
                "map {name} has {}-byte keys and {}-byte values; this build uses {key} and {value}",
                info.key_size(),
                info.value_size()
            )));
        }
        entries.insert(name, info.max_entries());
    }
    Ok(Sizes {
        sources: entries[names::SOURCES],
        exact: entries[names::EXACT],
        prefix: entries[names::PREFIX],
        allow: entries[names::ALLOW],
        rules: entries[names::RULES],
        cache: entries[names::SRC_CACHE],
    })
}

/// A seed the sender of packets cannot guess.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into the valid buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // No entropy (very early boot): fall back to the clock, still not sender-controlled.
        return monotonic_ns() as u32 ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn program_err(program: &'static str, source: ProgramError) -> DataplaneError {
    let log = match &source {
        ProgramError::LoadError { verifier_log, .. } => format!("\nverifier log:\n{verifier_log}"),
        _ => String::new(),
    };
    DataplaneError::Program {
        program,
        source: Box::new(source),
        log,
    }
}

/// One rule slot's hits, summed over CPUs.
fn slot_hits(
    hits: &PerCpuArray<&MapData, RuleHits>,
    slot: u32,
) -> Result<RuleHits, DataplaneError> {
    let per_cpu = hits.get(&slot, 0).map_err(map_err(names::RULE_HITS))?;
    Ok(sum_hits(per_cpu.iter()))
}

fn sum_hits<'a>(per_cpu: impl Iterator<Item = &'a RuleHits>) -> RuleHits {
    per_cpu.fold(RuleHits::default(), |a, h| RuleHits {
        packets: a.packets + h.packets,
        bytes: a.bytes + h.bytes,
        dropped_packets: a.dropped_packets + h.dropped_packets,
        dropped_bytes: a.dropped_bytes + h.dropped_bytes,
    })
}
