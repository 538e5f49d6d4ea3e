//! The BPF filesystem and the pin layout: where maps and links live, what adopting checks,
//! and removing it all.

use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    mem::size_of,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, MapData, MapInfo},
    programs::XdpMode,
};
use swarmwall_maps::{Config, GlobalStats, Rule, RuleHits, SourceCounters, SourceSlot, names};

use super::{DataplaneError, Sizes};

/// Every map of the object with the sizes of its key and value: what adopting a pinned map
/// checks, since the kernel would otherwise happily hand back a map of another layout.
pub(super) const MAP_LAYOUT: [(&str, usize, usize); 17] = [
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
    (
        names::HELLO,
        size_of::<swarmwall_maps::HelloKey>(),
        size_of::<swarmwall_maps::HelloFlow>(),
    ),
];

/// Where a fresh data plane's maps are pinned while it is being built; renamed to `maps` once
/// complete and configured, so a start interrupted at any point leaves either no `maps` or a
/// whole one. (bpffs refuses names with a dot.)
pub(super) const BUILD_DIR: &str = "maps-new";

/// How long a start waits for the pin directory's lock: a predecessor killed a moment ago may
/// still be exiting.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// An exclusive `flock` on a pin directory, held by the one process that owns the data plane
/// pinned there, for its whole life (as cloudflare/tubular locks its bpffs directory). The
/// kernel drops it when the process dies, however it dies.
pub struct PinLock {
    _dir: nix::fcntl::Flock<File>,
}

impl PinLock {
    /// Locks the existing directory `dir`, waiting up to `wait` (polling) while another process
    /// holds it; [`DataplaneError::Busy`] names that process when the wait runs out.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<PinLock, DataplaneError> {
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            let file = File::open(dir).map_err(pin_err("opening", dir))?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    // `down` may have removed the directory while we waited: then the lock is on
                    // an orphan, and whoever recreates the path could lock it too.
                    let same = std::fs::metadata(dir).is_ok_and(|m| {
                        locked
                            .metadata()
                            .is_ok_and(|l| (l.dev(), l.ino()) == (m.dev(), m.ino()))
                    });
                    if same {
                        return Ok(PinLock { _dir: locked });
                    }
                    if Instant::now() >= deadline {
                        return Err(pin_err("locking", dir)(std::io::Error::other(
                            "the directory was removed each time it was locked",
                        )));
                    }
                    std::fs::create_dir_all(dir).map_err(pin_err("creating", dir))?;
                }
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let holder = lock_holder(&file)
                        .map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"));
                    if Instant::now() >= deadline {
                        return Err(DataplaneError::Busy {
                            dir: dir.display().to_string(),
                            holder,
                        });
                    }
                    if !said {
                        tracing::info!(
                            dir = %dir.display(),
                            "pin directory locked by {holder}; waiting up to {wait:?} for it to exit"
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, e)) => return Err(pin_err("locking", dir)(std::io::Error::from(e))),
            }
        }
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks` (lines like
/// `1: FLOCK  ADVISORY  WRITE 1234 00:28:30383 0 EOF`, the device as hex major:minor).
fn lock_holder(file: &File) -> Option<u32> {
    let m = file.metadata().ok()?;
    let dev = m.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        m.ino()
    );
    holder_in(&std::fs::read_to_string("/proc/locks").ok()?, &id)
}

/// The holder of the flock on file `id` (`maj:min:inode`) in the text of `/proc/locks`.
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as `1: -> FLOCK …`; only the holder has FLOCK second.
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// `down`: detaches and removes the data plane pinned under `dir`, unless a process owns it
/// (holds its lock), whatever socket that process serves. Returns what it removed.
pub fn remove_unowned(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let _lock = PinLock::acquire(dir, Duration::ZERO)?;
    remove_pins(dir)
}

/// Removes what an interrupted start can leave under `dir`, which the caller has locked: a
/// half-built `maps-new`, and (from builds before it existed) a `maps` that was never configured
/// — some maps missing or its config never written — with no link pinned to run it. A set with
/// a link, or with a written config, is a real data plane and is left alone. Returns what it
/// removed, for the log.
pub(super) fn clear_leftovers(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let mut removed = remove_tree(&dir.join(BUILD_DIR))?;
    let maps = dir.join("maps");
    let present = MAP_LAYOUT
        .iter()
        .filter(|(n, _, _)| maps.join(n).exists())
        .count();
    if present == 0 {
        return Ok(removed);
    }
    let linked = ["driver", "generic"].iter().any(|m| {
        std::fs::read_dir(dir.join("links").join(m)).is_ok_and(|mut d| d.next().is_some())
    });
    // A config that cannot be read as this build's (another ABI's layout) counts as written.
    let configured = match pinned_abi(&maps) {
        Ok(abi) => abi != 0,
        Err(_) => maps.join(names::CONFIG).exists(),
    };
    if !linked && !configured {
        removed.extend(remove_tree(&maps)?);
    }
    Ok(removed)
}

/// A `maps-new` being built: removed again if the build fails (a crash leaves it to the next
/// start's [`clear_leftovers`]).
pub(super) struct Building {
    path: PathBuf,
    committed: bool,
}

impl Building {
    /// Creates the build directory under `dir`.
    pub(super) fn start(dir: &Path) -> Result<Building, DataplaneError> {
        let path = dir.join(BUILD_DIR);
        std::fs::create_dir(&path).map_err(pin_err("creating", &path))?;
        Ok(Building {
            path,
            committed: false,
        })
    }

    /// The build directory.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the finished build to `dir/maps`: from here on it is the data plane.
    pub(super) fn commit(mut self, dir: &Path) -> Result<(), DataplaneError> {
        std::fs::rename(&self.path, dir.join("maps")).map_err(pin_err("renaming", &self.path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!("removing the unfinished {}: {e}", self.path.display());
        }
    }
}

/// Removes every pin in `dir` and the directory itself, if it exists.
fn remove_tree(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(pin_err("reading", dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry.map_err(pin_err("reading", dir))?.path();
        std::fs::remove_file(&path).map_err(pin_err("removing", &path))?;
        removed.push(path.display().to_string());
    }
    std::fs::remove_dir(dir).map_err(pin_err("removing", dir))?;
    Ok(removed)
}

/// The ABI version in the config map pinned in `maps`, read without loading anything.
pub(super) fn pinned_abi(maps: &Path) -> Result<u32, String> {
    let data = MapData::from_pin(maps.join(names::CONFIG))
        .map_err(|e| format!("cannot open pinned map {}: {e}", names::CONFIG))?;
    let config: Array<MapData, Config> = Array::try_from(aya::maps::Map::Array(data))
        .map_err(|e| format!("pinned map {} is not the config array: {e}", names::CONFIG))?;
    config
        .get(&0, 0)
        .map(|c| c.abi_version)
        .map_err(|e| format!("cannot read pinned map {}: {e}", names::CONFIG))
}

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
    for sub in ["links/driver", "links/generic", "links", "maps", BUILD_DIR] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_found_in_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 26349 fe:00:5629565 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 26480 00:28:30383 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 26999 00:28:30383 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 1 00:28:777 0 EOF\n";
        assert_eq!(holder_in(locks, "00:28:30383"), Some(26480));
        assert_eq!(
            holder_in(locks, "00:28:777"),
            None,
            "only flock locks count"
        );
        assert_eq!(holder_in(locks, "00:28:1"), None);
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let tmp = tempfile::TempDir::new().unwrap();
        let held = PinLock::acquire(tmp.path(), Duration::ZERO).unwrap();
        let t = Instant::now();
        let e = PinLock::acquire(tmp.path(), Duration::from_millis(300))
            .err()
            .expect("the directory is locked");
        assert!(t.elapsed() >= Duration::from_millis(300), "it waited first");
        let pid = format!("pid {}", std::process::id());
        assert!(
            matches!(&e, DataplaneError::Busy { holder, .. } if *holder == pid),
            "{e}"
        );
        drop(held);
        PinLock::acquire(tmp.path(), Duration::ZERO).unwrap();
    }
}
