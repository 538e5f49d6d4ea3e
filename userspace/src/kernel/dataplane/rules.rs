//! The rule façade: rules and the allow list written through the rule table into the maps, and
//! the runtime knobs of the config map.

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key},
    util::nr_cpus,
};
use swarmwall_maps::{
    ABI_VERSION, Addr, Config, FLAG_CACHE_OFF, MODE_ENFORCE, MODE_OBSERVE, Rule, RuleHits, names,
};

use super::{Dataplane, DataplaneError, Mode, map_err, monotonic_ns};
use crate::{
    addr::Target,
    rules::{RuleId, RuleSpec},
    table::{Op, RuleTable},
};

impl Dataplane {
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

    /// Gives a rule a new lifetime from now (`None`: permanent), in place: it never stops
    /// matching on the way.
    pub fn retime_rule(
        &mut self,
        id: RuleId,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), DataplaneError> {
        let ops = self.table.retime(id, ttl, monotonic_ns())?;
        self.apply(&ops)
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

    /// Adds a rule under the rule store's id.
    pub fn add_rule_as(&mut self, id: RuleId, spec: RuleSpec) -> Result<(), DataplaneError> {
        let (_, ops) = self.table.add_as(id, spec, monotonic_ns())?;
        self.apply(&ops)
    }

    /// The rule table (what the kernel maps hold).
    pub fn table(&self) -> &RuleTable {
        &self.table
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

    pub(super) fn config(&self) -> Result<Config, DataplaneError> {
        let m: Array<&MapData, Config> =
            Array::try_from(self.map(names::CONFIG)?).map_err(map_err(names::CONFIG))?;
        m.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    pub(super) fn write_config(&mut self, mut c: Config) -> Result<(), DataplaneError> {
        c.abi_version = ABI_VERSION;
        let mut m: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(names::CONFIG)?).map_err(map_err(names::CONFIG))?;
        m.set(0, c, 0).map_err(map_err(names::CONFIG))
    }
}
