//! The rule table: which rule lives in which kernel slot, and how chains link.
//!
//! Pure logic. Every change returns the map writes ([`Op`]) that carry it out, in an order that is
//! safe against a packet running concurrently: a slot is written before anything points at it,
//! and unlinked before it is cleared. The data plane applies them; unit tests run them against a
//! model of the kernel's lookup.
//!
//! A prefix's chain is its own rules followed by the chain of its nearest covering prefix, so the
//! one LPM lookup the kernel makes (longest match) still sees the rules of shorter prefixes.

use std::collections::{BTreeMap, HashMap};

use swarmwall_maps::{Addr, MAX_CHAIN, NO_RULE, Rule};

use crate::{
    addr::Target,
    filter::PrefixFilter,
    rules::{Action, Proto, RuleError, RuleId, RuleSpec, Scope},
};

/// One map write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Zero a slot's per-CPU hit counters (before the slot is reused).
    ClearHits { slot: u32 },
    /// Write a rule slot.
    SetRule { slot: u32, rule: Rule },
    /// Point an exact-address key at a chain head.
    SetExact { key: Addr, head: u32 },
    /// Remove an exact-address key.
    DelExact { key: Addr },
    /// Point a prefix at a chain head.
    SetPrefix { key: Addr, len: u32, head: u32 },
    /// Remove a prefix.
    DelPrefix { key: Addr, len: u32 },
    /// Write a word of the prefix presence filter.
    PrefixFilter { word: u32, value: u64 },
    /// Add an allow-list prefix.
    SetAllow { key: Addr, len: u32, id: u64 },
    /// Remove an allow-list prefix.
    DelAllow { key: Addr, len: u32 },
    /// Write a word of the allow-list presence filter.
    AllowFilter { word: u32, value: u64 },
}

/// A rule the table holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What was asked for.
    pub spec: RuleSpec,
    /// Kernel slot.
    pub slot: u32,
    /// Expiry on the kernel's clock (`CLOCK_MONOTONIC` ns), 0 for never.
    pub expires_ns: u64,
}

type PrefixKey = (u128, u32);

fn pkey(t: &Target) -> PrefixKey {
    let (a, l) = t.key();
    (u128::from_be_bytes(a), l)
}

/// The target a kernel prefix key stands for, if it can be one.
fn target_of(key: &Addr, len: u32) -> Option<Target> {
    let ip = crate::addr::from_key(key);
    let own = if ip.is_ipv4() {
        len.checked_sub(96)?
    } else {
        len
    };
    let net = ipnet::IpNet::new(ip, u8::try_from(own).ok()?).ok()?;
    if net.prefix_len() == net.max_prefix_len() {
        Some(Target::Addr(ip))
    } else {
        Some(Target::Net(net))
    }
}

fn mask(bits: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - len))
    }
}

/// The table of rules and allow entries.
#[derive(Debug)]
pub struct RuleTable {
    capacity: u32,
    next_fresh: u32,
    free: Vec<u32>,
    next_id: RuleId,
    rules: BTreeMap<RuleId, Entry>,
    /// Identical-rule detection without a scan: (target, action, scope) -> id.
    index: HashMap<(Target, Action, Scope), RuleId>,
    /// How many prefixes of each length have rules: parent lookups probe only these lengths.
    lens: BTreeMap<u32, usize>,
    exact: HashMap<Addr, Vec<RuleId>>,
    prefix: BTreeMap<PrefixKey, Vec<RuleId>>,
    prefix_filter: PrefixFilter,
    allow: BTreeMap<PrefixKey, (Target, u64)>,
    allow_filter: PrefixFilter,
    next_allow_id: u64,
}

impl RuleTable {
    /// An empty table over `capacity` kernel slots.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            next_fresh: 0,
            free: Vec::new(),
            next_id: 1,
            rules: BTreeMap::new(),
            index: HashMap::new(),
            lens: BTreeMap::new(),
            exact: HashMap::new(),
            prefix: BTreeMap::new(),
            prefix_filter: PrefixFilter::default(),
            allow: BTreeMap::new(),
            allow_filter: PrefixFilter::default(),
            next_allow_id: 1,
        }
    }

    /// All rules, by id.
    pub fn rules(&self) -> impl Iterator<Item = (RuleId, &Entry)> {
        self.rules.iter().map(|(id, e)| (*id, e))
    }

    /// One rule.
    pub fn get(&self, id: RuleId) -> Option<&Entry> {
        self.rules.get(&id)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Ids of the rules whose target covers `ip`: its exact rules and those of every prefix
    /// holding it (one map probe per prefix length in use).
    pub fn rules_covering(&self, ip: std::net::IpAddr) -> Vec<RuleId> {
        let key = crate::addr::to_key(ip);
        let mut ids = self.exact.get(&key).cloned().unwrap_or_default();
        let bits = u128::from_be_bytes(key);
        for len in self.lens.keys() {
            if let Some(own) = self.prefix.get(&(mask(bits, *len), *len)) {
                ids.extend(own);
            }
        }
        ids
    }

    /// Allow-list entries.
    pub fn allowed(&self) -> impl Iterator<Item = &Target> {
        self.allow.values().map(|(t, _)| t)
    }

    /// True if an allow-list entry covers any part of `target`.
    pub fn allow_overlaps(&self, target: &Target) -> bool {
        self.allow
            .values()
            .any(|(a, _)| crate::guard::overlaps(a, target))
    }

    /// Rules whose expiry is at or before `now_ns`.
    pub fn expired(&self, now_ns: u64) -> Vec<RuleId> {
        self.rules
            .iter()
            .filter(|(_, e)| e.expires_ns != 0 && e.expires_ns <= now_ns)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Adds a rule with the next free id; `now_ns` is the kernel clock, for the expiry.
    pub fn add(&mut self, spec: RuleSpec, now_ns: u64) -> Result<(RuleId, Vec<Op>), RuleError> {
        let id = self.next_id;
        self.add_as(id, spec, now_ns)
    }

    /// Adds a rule under an id chosen by the caller (the rule store's).
    pub fn add_as(
        &mut self,
        id: RuleId,
        spec: RuleSpec,
        now_ns: u64,
    ) -> Result<(RuleId, Vec<Op>), RuleError> {
        spec.validate()?;
        if self.rules.contains_key(&id) {
            return Err(RuleError::Duplicate { id });
        }
        if let Some(id) = self.index.get(&(spec.target, spec.action, spec.scope)) {
            return Err(RuleError::Duplicate { id: *id });
        }
        let expires_ns = spec
            .ttl
            .map(|t| now_ns.saturating_add(t.as_nanos().min(u64::MAX as u128) as u64))
            .unwrap_or(0);
        let mut ops = Vec::new();
        match spec.target {
            Target::Addr(_) => {
                let (key, _) = spec.target.key();
                let chain_len = self.exact.get(&key).map_or(0, Vec::len);
                if chain_len + 1 > MAX_CHAIN as usize {
                    return Err(RuleError::ChainTooLong {
                        target: spec.target,
                        count: chain_len + 1,
                        max: MAX_CHAIN,
                    });
                }
                let slot = self.alloc(&mut ops)?;
                self.insert_entry(id, spec, slot, expires_ns);
                ops.push(Op::SetRule {
                    slot,
                    rule: self.kernel_rule(id, NO_RULE),
                });
                let chain = self.exact.entry(key).or_default();
                let prev_last = chain.last().copied();
                chain.push(id);
                match prev_last {
                    None => ops.push(Op::SetExact { key, head: slot }),
                    Some(last) => ops.push(Op::SetRule {
                        slot: self.rules[&last].slot,
                        rule: self.kernel_rule(last, slot),
                    }),
                }
                Ok((id, ops))
            }
            Target::Net(_) => {
                let k = pkey(&spec.target);
                let own_len = self.prefix.get(&k).map_or(0, Vec::len);
                let total = own_len + 1 + self.parent(k).map_or(0, |p| self.total_len(p));
                let worst = self
                    .descendants(k)
                    .into_iter()
                    .map(|d| self.total_len(d) + 1)
                    .max()
                    .unwrap_or(0)
                    .max(total);
                if worst > MAX_CHAIN as usize {
                    return Err(RuleError::ChainTooLong {
                        target: spec.target,
                        count: worst,
                        max: MAX_CHAIN,
                    });
                }
                let slot = self.alloc(&mut ops)?;
                self.insert_entry(id, spec, slot, expires_ns);
                let tail = self.parent(k).map_or(NO_RULE, |p| self.head(p));
                ops.push(Op::SetRule {
                    slot,
                    rule: self.kernel_rule(id, tail),
                });
                let prev_last = self.prefix.get(&k).and_then(|c| c.last().copied());
                match prev_last {
                    Some(last) => {
                        self.prefix.entry(k).or_default().push(id);
                        ops.push(Op::SetRule {
                            slot: self.rules[&last].slot,
                            rule: self.kernel_rule(last, slot),
                        });
                    }
                    None => {
                        // Children currently inheriting from our parent must now inherit from us;
                        // find them before we exist.
                        let children = self.children_of_new(k);
                        self.prefix.insert(k, vec![id]);
                        *self.lens.entry(k.1).or_default() += 1;
                        let (key, len) = (k.0.to_be_bytes(), k.1);
                        for (word, value) in self.prefix_filter.add(&key, len) {
                            ops.push(Op::PrefixFilter { word, value });
                        }
                        ops.push(Op::SetPrefix {
                            key,
                            len,
                            head: slot,
                        });
                        for c in children {
                            ops.push(self.relink_tail(c, slot));
                        }
                    }
                }
                Ok((id, ops))
            }
        }
    }

    /// Gives rule `id` a new lifetime (`ttl` from `now_ns`; `None`: permanent) in place: one
    /// rewrite of its slot, same place in its chain. An update of a rule's expiry as a removal
    /// and an addition would leave a moment in which the source passes.
    pub fn retime(
        &mut self,
        id: RuleId,
        ttl: Option<std::time::Duration>,
        now_ns: u64,
    ) -> Result<Vec<Op>, RuleError> {
        let entry = self
            .rules
            .get_mut(&id)
            .ok_or(RuleError::NoSuchRule { id })?;
        entry.spec.ttl = ttl;
        entry.expires_ns = ttl
            .map(|t| now_ns.saturating_add(t.as_nanos().min(u64::MAX as u128) as u64))
            .unwrap_or(0);
        let slot = entry.slot;
        let next = self.next_of(id);
        Ok(vec![Op::SetRule {
            slot,
            rule: self.kernel_rule(id, next),
        }])
    }

    /// The slot rule `id`'s kernel entry continues at: the next rule of its chain, else (for a
    /// prefix) the head of the covering prefix's chain, else none.
    fn next_of(&self, id: RuleId) -> u32 {
        let e = &self.rules[&id];
        let after = |chain: &[RuleId]| {
            let pos = chain.iter().position(|r| *r == id)?;
            chain.get(pos + 1).map(|n| self.rules[n].slot)
        };
        match e.spec.target {
            Target::Addr(_) => {
                let (key, _) = e.spec.target.key();
                self.exact
                    .get(&key)
                    .and_then(|c| after(c))
                    .unwrap_or(NO_RULE)
            }
            Target::Net(_) => {
                let k = pkey(&e.spec.target);
                self.prefix
                    .get(&k)
                    .and_then(|c| after(c))
                    .unwrap_or_else(|| self.parent(k).map_or(NO_RULE, |p| self.head(p)))
            }
        }
    }

    /// Removes a rule.
    pub fn remove(&mut self, id: RuleId) -> Result<Vec<Op>, RuleError> {
        let entry = self
            .rules
            .get(&id)
            .ok_or(RuleError::NoSuchRule { id })?
            .clone();
        let mut ops = Vec::new();
        match entry.spec.target {
            Target::Addr(_) => {
                let (key, _) = entry.spec.target.key();
                let chain = self.exact.get_mut(&key).expect("indexed rule has a chain");
                let pos = chain
                    .iter()
                    .position(|r| *r == id)
                    .expect("rule in its chain");
                chain.remove(pos);
                let chain = chain.clone();
                let after = chain.get(pos).map_or(NO_RULE, |n| self.rules[n].slot);
                if pos == 0 {
                    if chain.is_empty() {
                        self.exact.remove(&key);
                        ops.push(Op::DelExact { key });
                    } else {
                        ops.push(Op::SetExact { key, head: after });
                    }
                } else {
                    let prev = chain[pos - 1];
                    ops.push(Op::SetRule {
                        slot: self.rules[&prev].slot,
                        rule: self.kernel_rule(prev, after),
                    });
                }
            }
            Target::Net(_) => {
                let k = pkey(&entry.spec.target);
                let parent_head = self.parent(k).map_or(NO_RULE, |p| self.head(p));
                let own = self.prefix.get_mut(&k).expect("indexed rule has a chain");
                let pos = own
                    .iter()
                    .position(|r| *r == id)
                    .expect("rule in its chain");
                own.remove(pos);
                let own = own.clone();
                let after = own.get(pos).map_or(parent_head, |n| self.rules[n].slot);
                if pos == 0 {
                    let children = self.children(k);
                    let (key, len) = (k.0.to_be_bytes(), k.1);
                    if own.is_empty() {
                        self.prefix.remove(&k);
                        if let Some(n) = self.lens.get_mut(&k.1) {
                            *n -= 1;
                            if *n == 0 {
                                self.lens.remove(&k.1);
                            }
                        }
                        ops.push(Op::DelPrefix { key, len });
                        for (word, value) in self.prefix_filter.remove(&key, len) {
                            ops.push(Op::PrefixFilter { word, value });
                        }
                    } else {
                        ops.push(Op::SetPrefix {
                            key,
                            len,
                            head: after,
                        });
                    }
                    for c in children {
                        ops.push(self.relink_tail(c, after));
                    }
                } else {
                    let prev = own[pos - 1];
                    ops.push(Op::SetRule {
                        slot: self.rules[&prev].slot,
                        rule: self.kernel_rule(prev, after),
                    });
                }
            }
        }
        self.rules.remove(&id);
        self.index
            .remove(&(entry.spec.target, entry.spec.action, entry.spec.scope));
        ops.push(Op::SetRule {
            slot: entry.slot,
            rule: Rule::EMPTY,
        });
        self.free.push(entry.slot);
        Ok(ops)
    }

    /// Adds an allow-list entry.
    pub fn allow(&mut self, target: Target) -> Result<Vec<Op>, RuleError> {
        let k = pkey(&target);
        if self.allow.contains_key(&k) {
            return Err(RuleError::AlreadyAllowed { target });
        }
        let id = self.next_allow_id;
        self.next_allow_id += 1;
        self.allow.insert(k, (target, id));
        let (key, len) = target.key();
        let mut ops: Vec<Op> = self
            .allow_filter
            .add(&key, len)
            .into_iter()
            .map(|(word, value)| Op::AllowFilter { word, value })
            .collect();
        ops.push(Op::SetAllow { key, len, id });
        Ok(ops)
    }

    /// Removes an allow-list entry.
    pub fn disallow(&mut self, target: Target) -> Result<Vec<Op>, RuleError> {
        let k = pkey(&target);
        if self.allow.remove(&k).is_none() {
            return Err(RuleError::NotAllowed { target });
        }
        let (key, len) = target.key();
        let mut ops = vec![Op::DelAllow { key, len }];
        ops.extend(
            self.allow_filter
                .remove(&key, len)
                .into_iter()
                .map(|(word, value)| Op::AllowFilter { word, value }),
        );
        Ok(ops)
    }

    /// Rebuilds the table from what the kernel maps hold (a restarted daemon adopting pinned
    /// maps): `read_rule` reads a rule slot; `exact`, `prefixes` and `allow` are the map entries.
    /// Chains are followed, not trusted: a loop, a free slot in a chain or a key that cannot be a
    /// rule target is reported and left out (the caller then reconciles from the store).
    pub fn restore(
        capacity: u32,
        exact: &[(Addr, u32)],
        prefixes: &[(Addr, u32, u32)],
        allow: &[(Addr, u32, u64)],
        mut read_rule: impl FnMut(u32) -> Option<Rule>,
    ) -> (Self, Vec<String>) {
        let mut t = Self::new(capacity);
        let mut warnings = Vec::new();
        let heads: HashMap<u32, PrefixKey> = prefixes
            .iter()
            .map(|(a, l, h)| (*h, (u128::from_be_bytes(*a), *l)))
            .collect();
        let mut used = std::collections::HashSet::new();
        let mut chain =
            |head: u32, stop_at_other_heads: Option<PrefixKey>, warnings: &mut Vec<String>| {
                let mut out = Vec::new();
                let mut slot = head;
                while slot != NO_RULE && out.len() < MAX_CHAIN as usize {
                    if let Some(me) = stop_at_other_heads
                        && slot != head
                        && heads.get(&slot).is_some_and(|k| *k != me)
                    {
                        break;
                    }
                    match read_rule(slot) {
                        Some(r) if r.action != 0 => {
                            out.push((slot, r));
                            slot = r.next;
                        }
                        _ => {
                            warnings.push(format!(
                                "rule chain at slot {head} reaches free slot {slot}"
                            ));
                            break;
                        }
                    }
                }
                out
            };
        let mut adopt =
            |t: &mut Self, target: Target, links: Vec<(u32, Rule)>, warnings: &mut Vec<String>| {
                let mut ids = Vec::new();
                for (slot, r) in links {
                    if !used.insert(slot) || t.rules.contains_key(&r.id) {
                        warnings.push(format!(
                            "slot {slot} (rule {}) is linked twice; left out",
                            r.id
                        ));
                        continue;
                    }
                    let spec = RuleSpec {
                        target,
                        action: if r.action == swarmwall_maps::ACTION_OBSERVE {
                            Action::Observe
                        } else {
                            Action::Drop
                        },
                        scope: Scope {
                            dst: (r.scope_flags & swarmwall_maps::SCOPE_DST != 0)
                                .then_some(crate::addr::from_key(&r.scope_dst)),
                            proto: match r.scope_proto {
                                _ if r.scope_flags & swarmwall_maps::SCOPE_PROTO == 0 => None,
                                6 => Some(Proto::Tcp),
                                17 => Some(Proto::Udp),
                                1 => Some(Proto::Icmp),
                                58 => Some(Proto::Icmpv6),
                                _ => None,
                            },
                            port: (r.scope_flags & swarmwall_maps::SCOPE_PORT != 0)
                                .then_some(r.scope_port),
                        },
                        ttl: None,
                    };
                    t.insert_entry(r.id, spec, slot, r.expires_ns);
                    ids.push(r.id);
                }
                ids
            };
        for (key, head) in exact {
            let target = Target::Addr(crate::addr::from_key(key));
            let links = chain(*head, None, &mut warnings);
            let ids = adopt(&mut t, target, links, &mut warnings);
            if !ids.is_empty() {
                t.exact.insert(*key, ids);
            }
        }
        for (key, len, head) in prefixes {
            let k = (u128::from_be_bytes(*key), *len);
            let Some(target) = target_of(key, *len) else {
                warnings.push(format!(
                    "prefix key of length {len} is not a valid target; left out"
                ));
                continue;
            };
            let links = chain(*head, Some(k), &mut warnings);
            let ids = adopt(&mut t, target, links, &mut warnings);
            if !ids.is_empty() {
                t.prefix.insert(k, ids);
                *t.lens.entry(k.1).or_default() += 1;
                t.prefix_filter.add(key, *len);
            }
        }
        for (key, len, id) in allow {
            if let Some(target) = target_of(key, *len) {
                t.allow
                    .insert((u128::from_be_bytes(*key), *len), (target, *id));
                t.allow_filter.add(key, *len);
                t.next_allow_id = t.next_allow_id.max(id + 1);
            }
        }
        let top = used.iter().copied().max().map_or(0, |m| m + 1);
        t.next_fresh = top;
        t.free = (0..top).filter(|s| !used.contains(s)).collect();
        (t, warnings)
    }

    fn alloc(&mut self, ops: &mut Vec<Op>) -> Result<u32, RuleError> {
        if let Some(slot) = self.free.pop() {
            // A reused slot still holds its previous rule's hits.
            ops.push(Op::ClearHits { slot });
            return Ok(slot);
        }
        if self.next_fresh >= self.capacity {
            return Err(RuleError::Full {
                capacity: self.capacity,
            });
        }
        self.next_fresh += 1;
        Ok(self.next_fresh - 1)
    }

    fn insert_entry(&mut self, id: RuleId, spec: RuleSpec, slot: u32, expires_ns: u64) {
        self.next_id = self.next_id.max(id + 1);
        self.index
            .insert((spec.target, spec.action, spec.scope), id);
        self.rules.insert(
            id,
            Entry {
                spec,
                slot,
                expires_ns,
            },
        );
    }

    fn kernel_rule(&self, id: RuleId, next: u32) -> Rule {
        let e = &self.rules[&id];
        Rule {
            id,
            expires_ns: e.expires_ns,
            scope_dst: e.spec.scope.dst_key(),
            next,
            scope_port: e.spec.scope.port.unwrap_or(0),
            scope_proto: e.spec.scope.proto.map_or(0, |p| p.number()),
            action: e.spec.action.code(),
            scope_flags: e.spec.scope.flags(),
            _pad: [0; 7],
        }
    }

    fn head(&self, k: PrefixKey) -> u32 {
        self.prefix
            .get(&k)
            .and_then(|c| c.first())
            .map_or(NO_RULE, |id| self.rules[id].slot)
    }

    /// The nearest strictly covering prefix that has rules.
    fn parent(&self, k: PrefixKey) -> Option<PrefixKey> {
        self.lens
            .range(..k.1)
            .rev()
            .map(|(l, _)| (mask(k.0, *l), *l))
            .find(|p| self.prefix.contains_key(p))
    }

    /// Chain length the kernel walks for `k`: own rules plus inherited ones.
    fn total_len(&self, k: PrefixKey) -> usize {
        self.prefix.get(&k).map_or(0, Vec::len) + self.parent(k).map_or(0, |p| self.total_len(p))
    }

    /// Prefixes strictly inside `k`.
    fn descendants(&self, k: PrefixKey) -> Vec<PrefixKey> {
        let lo = mask(k.0, k.1);
        let hi = lo
            | if k.1 == 0 {
                u128::MAX
            } else {
                !(u128::MAX << (128 - k.1))
            };
        self.prefix
            .range((lo, 0)..=(hi, 128))
            .map(|(d, _)| *d)
            .filter(|d| d.1 > k.1)
            .collect()
    }

    /// Prefixes whose nearest covering prefix is `k`.
    fn children(&self, k: PrefixKey) -> Vec<PrefixKey> {
        self.descendants(k)
            .into_iter()
            .filter(|d| self.parent(*d) == Some(k))
            .collect()
    }

    /// Children `k` would have if it were inserted now.
    fn children_of_new(&self, k: PrefixKey) -> Vec<PrefixKey> {
        let old_parent = self.parent(k);
        self.descendants(k)
            .into_iter()
            .filter(|d| self.parent(*d) == old_parent)
            .collect()
    }

    /// Rewrites the last own rule of `k` to continue at `next`.
    fn relink_tail(&self, k: PrefixKey, next: u32) -> Op {
        let last = *self.prefix[&k]
            .last()
            .expect("a prefix in the table has rules");
        Op::SetRule {
            slot: self.rules[&last].slot,
            rule: self.kernel_rule(last, next),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use swarmwall_maps::{ACTION_DROP, ACTION_OBSERVE};

    use super::*;

    /// The kernel's view: maps as the ops leave them, and its chain walk.
    #[derive(Default)]
    struct Model {
        rules: HashMap<u32, Rule>,
        exact: HashMap<Addr, u32>,
        prefix: HashMap<(Addr, u32), u32>,
    }

    impl Model {
        fn apply(&mut self, ops: &[Op]) {
            for op in ops {
                match op {
                    Op::SetRule { slot, rule } => {
                        self.rules.insert(*slot, *rule);
                    }
                    Op::SetExact { key, head } => {
                        self.exact.insert(*key, *head);
                    }
                    Op::DelExact { key } => {
                        self.exact.remove(key);
                    }
                    Op::SetPrefix { key, len, head } => {
                        self.prefix.insert((*key, *len), *head);
                    }
                    Op::DelPrefix { key, len } => {
                        self.prefix.remove(&(*key, *len));
                    }
                    _ => {}
                }
            }
        }

        /// Rule ids the kernel would walk for a source, exact chain first.
        fn walk(&self, src: &str) -> (Vec<u64>, Vec<u64>) {
            let a = u128::from_be_bytes(crate::addr::to_key(src.parse::<IpAddr>().unwrap()));
            let chain = |mut slot: u32| {
                let mut ids = Vec::new();
                for _ in 0..MAX_CHAIN {
                    if slot == NO_RULE {
                        break;
                    }
                    let r = self.rules[&slot];
                    assert_ne!(r.action, 0, "walked into a free slot");
                    ids.push(r.id);
                    slot = r.next;
                }
                ids
            };
            let exact = self
                .exact
                .get(&a.to_be_bytes())
                .map_or(vec![], |h| chain(*h));
            let best = self
                .prefix
                .iter()
                .filter(|((k, l), _)| mask(a, *l) == u128::from_be_bytes(*k))
                .max_by_key(|((_, l), _)| *l);
            let pre = best.map_or(vec![], |(_, h)| chain(*h));
            (exact, pre)
        }
    }

    fn spec(t: &str, action: Action, port: Option<u16>) -> RuleSpec {
        RuleSpec {
            target: t.parse().unwrap(),
            action,
            scope: Scope {
                port,
                ..Scope::default()
            },
            ttl: None,
        }
    }

    fn add(t: &mut RuleTable, m: &mut Model, s: RuleSpec) -> RuleId {
        let (id, ops) = t.add(s, 1000).unwrap();
        m.apply(&ops);
        id
    }

    #[test]
    fn several_scoped_rules_for_one_source_chain() {
        let (mut t, mut m) = (RuleTable::new(16), Model::default());
        let a = add(&mut t, &mut m, spec("192.0.2.1", Action::Drop, Some(80)));
        let b = add(&mut t, &mut m, spec("192.0.2.1", Action::Drop, Some(443)));
        let c = add(&mut t, &mut m, spec("192.0.2.1", Action::Observe, None));
        assert_eq!(m.walk("192.0.2.1").0, vec![a, b, c]);
        m.apply(&t.remove(b).unwrap());
        assert_eq!(m.walk("192.0.2.1").0, vec![a, c]);
        m.apply(&t.remove(a).unwrap());
        assert_eq!(m.walk("192.0.2.1").0, vec![c]);
        m.apply(&t.remove(c).unwrap());
        assert!(m.exact.is_empty());
        assert!(matches!(t.remove(c), Err(RuleError::NoSuchRule { .. })));
    }

    #[test]
    fn prefixes_inherit_covering_rules_in_any_insert_order() {
        let (mut t, mut m) = (RuleTable::new(16), Model::default());
        let inner = add(
            &mut t,
            &mut m,
            spec("198.51.100.0/24", Action::Observe, None),
        );
        let outer = add(
            &mut t,
            &mut m,
            spec("198.51.0.0/16", Action::Drop, Some(80)),
        );
        let mid = add(&mut t, &mut m, spec("198.51.96.0/20", Action::Drop, None));
        assert_eq!(m.walk("198.51.100.9").1, vec![inner, mid, outer]);
        assert_eq!(m.walk("198.51.97.1").1, vec![mid, outer]);
        assert_eq!(m.walk("198.51.1.1").1, vec![outer]);
        // Removing the middle relinks the inner chain to the outer one.
        m.apply(&t.remove(mid).unwrap());
        assert_eq!(m.walk("198.51.100.9").1, vec![inner, outer]);
        // A second rule on the outer prefix, then removing its head: children follow the new head.
        let outer2 = add(
            &mut t,
            &mut m,
            spec("198.51.0.0/16", Action::Drop, Some(443)),
        );
        m.apply(&t.remove(outer).unwrap());
        assert_eq!(m.walk("198.51.100.9").1, vec![inner, outer2]);
        m.apply(&t.remove(outer2).unwrap());
        assert_eq!(m.walk("198.51.100.9").1, vec![inner]);
        assert_eq!(m.walk("198.51.1.1").1, Vec::<u64>::new());
    }

    #[test]
    fn chain_length_is_bounded_for_descendants_too() {
        let (mut t, mut m) = (RuleTable::new(64), Model::default());
        for p in 0..(MAX_CHAIN as u16) {
            add(
                &mut t,
                &mut m,
                spec("203.0.113.0/24", Action::Drop, Some(1000 + p)),
            );
        }
        let e = t
            .add(spec("203.0.0.0/16", Action::Drop, None), 0)
            .unwrap_err();
        assert!(matches!(e, RuleError::ChainTooLong { count: 9, .. }), "{e}");
        let e = t
            .add(spec("203.0.113.0/24", Action::Drop, None), 0)
            .unwrap_err();
        assert!(matches!(e, RuleError::ChainTooLong { .. }));
    }

    #[test]
    fn slots_are_reused_with_hits_cleared_and_capacity_enforced() {
        let mut t = RuleTable::new(2);
        let (a, _) = t.add(spec("192.0.2.1", Action::Drop, None), 0).unwrap();
        t.add(spec("192.0.2.2", Action::Drop, None), 0).unwrap();
        assert!(matches!(
            t.add(spec("192.0.2.3", Action::Drop, None), 0),
            Err(RuleError::Full { capacity: 2 })
        ));
        let slot = t.get(a).unwrap().slot;
        t.remove(a).unwrap();
        let (_, ops) = t.add(spec("192.0.2.3", Action::Drop, None), 0).unwrap();
        assert_eq!(ops[0], Op::ClearHits { slot });
    }

    #[test]
    fn rules_carry_action_scope_and_expiry() {
        let mut t = RuleTable::new(4);
        let mut s = spec("192.0.2.1", Action::Observe, Some(443));
        s.scope.dst = Some("203.0.113.5".parse().unwrap());
        s.ttl = Some(Duration::from_secs(60));
        let (_, ops) = t.add(s.clone(), 5).unwrap();
        let Op::SetRule { rule, .. } = ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(rule.action, ACTION_OBSERVE);
        assert_eq!(rule.expires_ns, 5 + 60_000_000_000);
        assert_eq!(rule.scope_port, 443);
        assert_eq!(
            rule.scope_flags,
            swarmwall_maps::SCOPE_DST | swarmwall_maps::SCOPE_PORT
        );
        assert_eq!(&rule.scope_dst[12..], &[203, 0, 113, 5]);
        assert!(matches!(t.add(s, 5), Err(RuleError::Duplicate { .. })));
        assert_eq!(t.expired(60_000_000_004), Vec::<u64>::new());
        assert_eq!(t.expired(60_000_000_005).len(), 1);
        let (_, ops) = t.add(spec("192.0.2.9", Action::Drop, None), 0).unwrap();
        assert!(matches!(
            ops[0],
            Op::SetRule {
                rule: Rule {
                    action: ACTION_DROP,
                    expires_ns: 0,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn restore_rebuilds_what_the_kernel_holds() {
        let (mut t, mut m) = (RuleTable::new(64), Model::default());
        let a = add(&mut t, &mut m, spec("192.0.2.1", Action::Drop, Some(80)));
        let b = add(&mut t, &mut m, spec("192.0.2.1", Action::Observe, None));
        let outer = add(&mut t, &mut m, spec("198.51.0.0/16", Action::Drop, None));
        let inner = add(
            &mut t,
            &mut m,
            spec("198.51.100.0/24", Action::Observe, Some(443)),
        );
        let c = add(&mut t, &mut m, spec("2001:db8::/32", Action::Drop, None));
        m.apply(&t.remove(b).unwrap());
        let exact: Vec<_> = m.exact.iter().map(|(k, h)| (*k, *h)).collect();
        let prefixes: Vec<_> = m.prefix.iter().map(|((k, l), h)| (*k, *l, *h)).collect();
        let (r, warnings) =
            RuleTable::restore(64, &exact, &prefixes, &[], |s| m.rules.get(&s).copied());
        assert!(warnings.is_empty(), "{warnings:?}");
        let ids: Vec<_> = r.rules().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![a, outer, inner, c]);
        for (id, e) in r.rules() {
            assert_eq!(e.spec.target, t.get(id).unwrap().spec.target);
            assert_eq!(e.spec.scope, t.get(id).unwrap().spec.scope);
            assert_eq!(e.spec.action, t.get(id).unwrap().spec.action);
            assert_eq!(e.slot, t.get(id).unwrap().slot);
        }
        // The restored table keeps working: removing the outer prefix relinks the inner one.
        let mut r = r;
        m.apply(&r.remove(outer).unwrap());
        assert_eq!(m.walk("198.51.100.9").1, vec![inner]);
        // New slots don't collide with live ones.
        let (_, ops) = r.add(spec("192.0.2.9", Action::Drop, None), 0).unwrap();
        let used: Vec<u32> = r.rules().map(|(_, e)| e.slot).collect();
        let Op::SetRule { slot, .. } = ops
            .iter()
            .find(|o| matches!(o, Op::SetRule { .. }))
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(used.iter().filter(|s| *s == slot).count(), 1);
    }

    #[test]
    fn restore_survives_a_corrupt_chain() {
        let mut rules = HashMap::new();
        let mut r = Rule::EMPTY;
        r.id = 7;
        r.action = ACTION_DROP;
        r.next = 0; // a loop onto itself
        rules.insert(0u32, r);
        let key = crate::addr::to_key("192.0.2.1".parse().unwrap());
        let (t, warnings) =
            RuleTable::restore(8, &[(key, 0)], &[], &[], |s| rules.get(&s).copied());
        assert_eq!(t.len(), 1);
        assert!(!warnings.is_empty());
    }

    #[test]
    fn allow_list_round_trips() {
        let mut t = RuleTable::new(4);
        let net: Target = "10.0.0.0/8".parse().unwrap();
        let ops = t.allow(net).unwrap();
        assert!(matches!(ops.last(), Some(Op::SetAllow { len: 104, .. })));
        assert!(t.allow_overlaps(&"10.1.2.3".parse().unwrap()));
        assert!(!t.allow_overlaps(&"11.1.2.3".parse().unwrap()));
        assert!(matches!(
            t.allow(net),
            Err(RuleError::AlreadyAllowed { .. })
        ));
        assert!(matches!(t.disallow(net).unwrap()[0], Op::DelAllow { .. }));
        assert!(matches!(t.disallow(net), Err(RuleError::NotAllowed { .. })));
    }

    #[test]
    fn retime_rewrites_one_slot_in_place_and_keeps_the_chains() {
        let mut t = RuleTable::new(16);
        let spec = |target: &str, port: Option<u16>, ttl: Option<u64>| RuleSpec {
            target: target.parse().unwrap(),
            action: crate::Action::Drop,
            scope: crate::Scope {
                port,
                proto: port.map(|_| crate::Proto::Tcp),
                ..crate::Scope::default()
            },
            ttl: ttl.map(Duration::from_secs),
        };
        // Two rules on one address (a chain) and a /24 under a /16 (an inherited tail).
        t.add_as(1, spec("192.0.2.7", Some(80), Some(60)), 0)
            .unwrap();
        t.add_as(2, spec("192.0.2.7", Some(443), None), 0).unwrap();
        t.add_as(3, spec("10.1.0.0/16", None, None), 0).unwrap();
        t.add_as(4, spec("10.1.2.0/24", None, Some(60)), 0).unwrap();
        let before: Vec<(RuleId, u32)> = t.rules().map(|(id, e)| (id, e.slot)).collect();

        let ops = t.retime(1, Some(Duration::from_secs(3600)), 5).unwrap();
        let [Op::SetRule { slot, rule }] = ops.as_slice() else {
            panic!("one rule rewrite expected, got {ops:?}")
        };
        assert_eq!(*slot, t.get(1).unwrap().slot);
        assert_eq!(rule.expires_ns, 5 + 3_600_000_000_000);
        assert_eq!(
            rule.next,
            t.get(2).unwrap().slot,
            "still followed by rule 2"
        );

        let ops = t.retime(4, None, 5).unwrap();
        let [Op::SetRule { rule, .. }] = ops.as_slice() else {
            panic!("{ops:?}")
        };
        assert_eq!(rule.expires_ns, 0);
        assert_eq!(
            rule.next,
            t.get(3).unwrap().slot,
            "the /24 still inherits the /16"
        );
        assert_eq!(t.get(4).unwrap().spec.ttl, None);

        let after: Vec<(RuleId, u32)> = t.rules().map(|(id, e)| (id, e.slot)).collect();
        assert_eq!(before, after);
        assert!(matches!(
            t.retime(9, None, 0),
            Err(RuleError::NoSuchRule { id: 9 })
        ));
    }
}
