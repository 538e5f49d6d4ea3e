//! The BPF filesystem and the pin layout: where maps and links live, what adopting checks,
//! and removing it all.

use std::{
    collections::HashMap as StdHashMap,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{maps::MapInfo, programs::XdpMode};
use swarmwall_maps::{Config, GlobalStats, Rule, RuleHits, SourceCounters, SourceSlot, names};

use super::{DataplaneError, Sizes};

/// Every map of the object with the sizes of its key and value: what adopting a pinned map
/// checks, since the kernel would otherwise happily hand back a map of another layout.
pub(super) const MAP_LAYOUT: [(&str, usize, usize); 16] = [
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
pub(super) fn link_pin(dir: &Path, iface: &str, mode: XdpMode) -> PathBuf {
    let mode = if mode == XdpMode::Skb {
        "generic"
    } else {
        "driver"
    };
    dir.join("links").join(mode).join(iface.replace('.', ":"))
}

pub(super) fn pin_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> DataplaneError {
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

/// Where systemd (and bpftool) mount the BPF filesystem.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `dir` will be on a BPF filesystem: pins only live there. Mounts bpffs on
/// `/sys/fs/bpf` if nothing is mounted there (as bpftool does; systemd normally has); refuses a
/// pin directory elsewhere that is not on bpffs.
pub(super) fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
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
pub(super) fn adopted_sizes(dir: &Path, maps: &Path) -> Result<Sizes, DataplaneError> {
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
