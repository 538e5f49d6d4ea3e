//! Reading what the kernel counted: global stats, per-source counters, rule hits, and the L7
//! event ring.

use std::{collections::HashMap as StdHashMap, mem::size_of};

use std::os::fd::AsFd as _;

use aya::{
    maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
    util::nr_cpus,
};
use swarmwall_maps::{Addr, GlobalStats, RuleHits, SourceCounters, SourceSlot, Stat, names};

use super::{Dataplane, DataplaneError, RuleInfo, SourceStats, map_err};
use crate::{addr::from_key, rules::RuleId};

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

impl Dataplane {
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

    /// TLS flows the kernel is following into their hello's next segment (entries of
    /// [`names::HELLO`]); bounded by the map's size.
    pub fn hello_flows(&self) -> Result<usize, DataplaneError> {
        let m: aya::maps::HashMap<&MapData, swarmwall_maps::HelloKey, swarmwall_maps::HelloFlow> =
            aya::maps::HashMap::try_from(self.map(names::HELLO)?).map_err(map_err(names::HELLO))?;
        Ok(m.keys().filter(Result::is_ok).count())
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
        read_sources(self.map(names::SOURCES)?, self.map(names::SRC_CACHE)?)
    }

    /// Read-only handles on the per-source counter maps, for a reader that must not hold up
    /// whoever changes this data plane (the daemon's sampler reads a million sources).
    pub fn counter_reader(&self) -> Result<CounterReader, DataplaneError> {
        Ok(CounterReader {
            sources: dup_map(self.map(names::SOURCES)?, names::SOURCES)?,
            cache: dup_map(self.map(names::SRC_CACHE)?, names::SRC_CACHE)?,
        })
    }

    fn hits_map(&self) -> Result<PerCpuArray<&MapData, RuleHits>, DataplaneError> {
        PerCpuArray::try_from(self.map(names::RULE_HITS)?).map_err(map_err(names::RULE_HITS))
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

/// The per-source counter maps on descriptors of their own: reads them without borrowing the
/// [`Dataplane`], so without whatever lock guards it (cloudflare/tubular's collector reads its
/// pinned maps the same way, beside the control path).
pub struct CounterReader {
    sources: Map,
    cache: Map,
}

impl CounterReader {
    /// Per-source counters summed over CPUs, as [`Dataplane::sources`].
    pub fn sources(&self) -> Result<Vec<SourceStats>, DataplaneError> {
        read_sources(&self.sources, &self.cache)
    }
}

/// A second handle on `map` (a dup of its descriptor), of the same kind.
fn dup_map(map: &Map, name: &'static str) -> Result<Map, DataplaneError> {
    let data = match map {
        Map::PerCpuLruHashMap(d) | Map::PerCpuHashMap(d) | Map::PerCpuArray(d) => d,
        _ => {
            return Err(DataplaneError::Missing {
                what: "per-CPU map",
                name,
            });
        }
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| map_err(name)(MapError::IoError(e)))?;
    let dup = MapData::from_fd(fd).map_err(map_err(name))?;
    Ok(match map {
        Map::PerCpuLruHashMap(_) => Map::PerCpuLruHashMap(dup),
        Map::PerCpuHashMap(_) => Map::PerCpuHashMap(dup),
        _ => Map::PerCpuArray(dup),
    })
}

/// Per-source counters summed over CPUs from the LRU hash and the per-CPU source cache.
fn read_sources(sources: &Map, cache: &Map) -> Result<Vec<SourceStats>, DataplaneError> {
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
    for (key, per_cpu) in lru_entries(sources)? {
        for c in &per_cpu {
            add(key, c);
        }
    }
    for slot in cache_slots(cache)? {
        if slot.counters.packets != 0 {
            add(slot.addr, &slot.counters);
        }
    }
    out.retain(|_, s| s.packets != 0);
    Ok(out.into_values().collect())
}

/// Every CPU's source cache slots: batched where the kernel can, else one by one.
fn cache_slots(map: &Map) -> Result<Vec<SourceSlot>, DataplaneError> {
    if let Map::PerCpuArray(data) = map {
        let ncpus = nr_cpus().map_err(|(_, e)| map_err(names::SRC_CACHE)(MapError::IoError(e)))?;
        if let Ok(v) = crate::kernel::batch::lookup_all_percpu::<u32, SourceSlot>(
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
fn lru_entries(map: &Map) -> Result<Vec<(Addr, Vec<SourceCounters>)>, DataplaneError> {
    if let Map::PerCpuLruHashMap(data) = map {
        let ncpus = nr_cpus().map_err(|(_, e)| map_err(names::SOURCES)(MapError::IoError(e)))?;
        match crate::kernel::batch::lookup_all_percpu::<Addr, SourceCounters>(
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
