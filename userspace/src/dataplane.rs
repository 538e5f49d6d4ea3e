//! The kernel side, from userspace: load the object, size its maps, attach it, and read and write
//! its maps through typed wrappers.

use std::{collections::HashMap as StdHashMap, net::IpAddr, time::Duration};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{
        Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::Key,
    },
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
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
        source: aya::EbpfError,
        /// Advice, e.g. on missing privileges.
        hint: &'static str,
    },
    /// A program failed to load (verifier) or attach.
    #[error("program {program}: {source}{log}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        source: ProgramError,
        /// Verifier log, when there is one.
        log: String,
    },
    /// Attaching to an interface failed in every mode tried.
    #[error("attaching XDP to '{iface}' failed: {source}")]
    Attach {
        /// Interface name.
        iface: String,
        /// The last error.
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: MapError,
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
    move |source| DataplaneError::Map { map, source }
}

/// Map capacities, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    table: RuleTable,
    links: Vec<(String, XdpLinkId, XdpMode)>,
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
    /// Loads the object with the given map sizes and loads (verifies) its programs.
    pub fn load(sizes: Sizes) -> Result<Self, DataplaneError> {
        if sizes.cache < 2 || !sizes.cache.is_power_of_two() {
            return Err(DataplaneError::CacheSize { value: sizes.cache });
        }
        let mut loader = EbpfLoader::new();
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
            DataplaneError::Load { source, hint }
        })?;
        for name in [programs::XDP, programs::FLOOR] {
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
        let mut dp = Self {
            ebpf,
            table: RuleTable::new(sizes.rules),
            links: Vec::new(),
        };
        let mut config = Config::new();
        config.hash_seed = random_u32();
        config.cache_mask = sizes.cache - 1;
        dp.write_config(config)?;
        Ok(dp)
    }

    /// Attaches the data plane to an interface; returns the mode it got.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<XdpMode, DataplaneError> {
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
                    self.links.push((iface.to_owned(), id, *m));
                    return Ok(*m);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(DataplaneError::Attach {
            iface: iface.to_owned(),
            source: last.expect("at least one mode tried"),
        })
    }

    /// Interfaces attached to, with their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, XdpMode)> {
        self.links.iter().map(|(i, _, m)| (i.as_str(), *m))
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let links = std::mem::take(&mut self.links);
        let prog = self.xdp(programs::XDP)?;
        for (_, id, _) in links {
            prog.detach(id)
                .map_err(|source| program_err(programs::XDP, source))?;
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
                let per_cpu = hits
                    .get(&entry.slot, 0)
                    .map_err(map_err(names::RULE_HITS))?;
                Ok(RuleInfo {
                    id,
                    entry: entry.clone(),
                    hits: sum_hits(per_cpu.iter()),
                })
            })
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
        let lru: PerCpuHashMap<&MapData, Addr, SourceCounters> =
            PerCpuHashMap::try_from(self.map(names::SOURCES)?).map_err(map_err(names::SOURCES))?;
        for item in lru.iter() {
            let (key, per_cpu) = match item {
                Ok(kv) => kv,
                // An LRU entry evicted between key and value reads: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(names::SOURCES)(e)),
            };
            for c in per_cpu.iter() {
                add(key, c);
            }
        }
        let cache: PerCpuArray<&MapData, SourceSlot> =
            PerCpuArray::try_from(self.map(names::SRC_CACHE)?)
                .map_err(map_err(names::SRC_CACHE))?;
        for per_cpu in cache.iter() {
            for slot in per_cpu.map_err(map_err(names::SRC_CACHE))?.iter() {
                if slot.counters.packets != 0 {
                    add(slot.addr, &slot.counters);
                }
            }
        }
        out.retain(|_, s| s.packets != 0);
        Ok(out.into_values().collect())
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
        source,
        log,
    }
}

fn sum_hits<'a>(per_cpu: impl Iterator<Item = &'a RuleHits>) -> RuleHits {
    per_cpu.fold(RuleHits::default(), |a, h| RuleHits {
        packets: a.packets + h.packets,
        bytes: a.bytes + h.bytes,
        dropped_packets: a.dropped_packets + h.dropped_packets,
        dropped_bytes: a.dropped_bytes + h.dropped_bytes,
    })
}
