//! The kernel side, from userspace: load the object, size its maps, attach it, and read and write
//! its maps through typed wrappers.
//!
//! One file per responsibility: [`pins`] (bpffs, the pin layout, removing pins), `load` (loading
//! the object, adopting pinned maps), `links` (attaching, pinning links), `counters` (reading
//! counters and the L7 ring) and `rules` (the rule façade over the maps and the runtime knobs).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, include_bytes_aligned,
    maps::MapError,
    programs::{ProgramError, Xdp},
};
use swarmwall_maps::{RuleHits, defaults};

use crate::{
    rules::{RuleError, RuleId},
    table::{Entry, RuleTable},
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
    /// Another process owns the pin directory (holds its lock): a running daemon, or one still
    /// exiting.
    #[error(
        "the pinned data plane in {dir} is owned by a running swarmwall daemon ({holder}); stop it first"
    )]
    Busy {
        /// The pin directory.
        dir: String,
        /// Who holds the lock: `pid N`, or a description when the pid is unknown.
        holder: String,
    },
    /// An interface to attach to does not exist (in this network namespace).
    #[error("no interface named '{iface}' here (see `ip link`)")]
    NoInterface {
        /// The name given.
        iface: String,
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

mod counters;
mod links;
mod load;
pub mod pins;
mod rules;

pub use counters::L7Reader;
use links::Attachment;
pub use links::ifindex;
pub use pins::{PinLock, remove_pins};

/// The loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    table: RuleTable,
    links: Vec<Attachment>,
    pin_dir: Option<PathBuf>,
    /// The pin directory's lock, held for this value's life: one owner of pinned state.
    _lock: Option<pins::PinLock>,
    adopted: bool,
    warnings: Vec<String>,
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
