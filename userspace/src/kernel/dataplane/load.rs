//! Loading the object: sizing its maps, loading its programs, and adopting a pinned data plane.

use std::path::Path;

use aya::{
    EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use swarmwall_maps::{ABI_VERSION, Addr, Config, Rule, names, programs};

use super::{
    Dataplane, DataplaneError, OBJECT, PERM_HINT, Prog, RunResult, Sizes, map_err, monotonic_ns,
    pins::{
        Building, LOCK_WAIT, MAP_LAYOUT, PinLock, adopted_sizes, clear_leftovers, ensure_bpffs,
        pin_err, pinned_abi,
    },
    program_err,
};
use crate::table::RuleTable;

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
        let mut lock = None;
        // Where the maps are pinned while loading: `maps` when adopting, `maps-new` for a fresh
        // data plane, renamed to `maps` once it is complete and configured.
        let mut pin_to = None;
        let mut building = None;
        if let Some(dir) = dir {
            ensure_bpffs(dir)?;
            std::fs::create_dir_all(dir).map_err(pin_err("creating", dir))?;
            lock = Some(PinLock::acquire(dir, LOCK_WAIT)?);
            // Nobody else builds here while we hold the lock: what a build left is a leftover.
            for path in clear_leftovers(dir)? {
                warnings.push(format!(
                    "removed {path}, left by a start that was interrupted"
                ));
            }
            for mode in ["driver", "generic"] {
                let d = dir.join("links").join(mode);
                std::fs::create_dir_all(&d).map_err(pin_err("creating", &d))?;
            }
            let maps = dir.join("maps");
            let present = MAP_LAYOUT
                .iter()
                .filter(|(n, _, _)| maps.join(n).exists())
                .count();
            adopted = present == MAP_LAYOUT.len();
            if !adopted && present > 0 {
                return Err(DataplaneError::Pins {
                    dir: dir.display().to_string(),
                    problem: "some maps are pinned and others are missing".into(),
                });
            }
            if adopted {
                // Everything is checked before anything is loaded against the pins: a refused
                // adoption must leave the running data plane exactly as it was.
                sizes = adopted_sizes(dir, &maps)?;
                let abi = pinned_abi(&maps).map_err(|problem| DataplaneError::Pins {
                    dir: dir.display().to_string(),
                    problem,
                })?;
                if abi != ABI_VERSION {
                    return Err(DataplaneError::Pins {
                        dir: dir.display().to_string(),
                        problem: format!(
                            "its maps have ABI version {abi} and this build needs {ABI_VERSION}"
                        ),
                    });
                }
                pin_to = Some(maps);
            } else {
                let b = Building::start(dir)?;
                pin_to = Some(b.path().to_path_buf());
                building = Some(b);
            }
        }
        let mut loader = EbpfLoader::new();
        let pin_paths: Vec<_> = pin_to
            .iter()
            .flat_map(|d| MAP_LAYOUT.iter().map(move |(n, _, _)| (*n, d.join(n))))
            .collect();
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
        let mut dp = Self {
            ebpf,
            table: RuleTable::new(sizes.rules),
            links: Vec::new(),
            pin_dir: dir.map(Path::to_path_buf),
            _lock: lock,
            adopted,
            warnings: Vec::new(),
        };
        if adopted {
            warnings.extend(dp.restore_table(sizes.rules)?);
        } else {
            let mut config = Config::new();
            config.hash_seed = random_u32();
            config.cache_mask = sizes.cache - 1;
            dp.write_config(config)?;
        }
        // Accepted: only now (re)point the tail-call slot of a running program at this build's
        // sampling program.
        dp.set_jump()?;
        if let (Some(dir), Some(b)) = (dir, building) {
            // Complete and configured: from here on it is the data plane.
            b.commit(dir)?;
        }
        dp.warnings = warnings;
        Ok(dp)
    }

    /// Points the tail-call slot at this object's sampling program.
    fn set_jump(&mut self) -> Result<(), DataplaneError> {
        let fd = self
            .ebpf
            .program(programs::L7)
            .ok_or(DataplaneError::Missing {
                what: "program",
                name: programs::L7,
            })?
            .fd()
            .map_err(|source| program_err(programs::L7, source))?
            .try_clone()
            .map_err(|e| map_err(names::JUMP)(MapError::IoError(e)))?;
        let mut jump: aya::maps::ProgramArray<&mut MapData> =
            aya::maps::ProgramArray::try_from(self.map_mut(names::JUMP)?)
                .map_err(map_err(names::JUMP))?;
        jump.set(swarmwall_maps::JUMP_L7, &fd, 0)
            .map_err(map_err(names::JUMP))
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
