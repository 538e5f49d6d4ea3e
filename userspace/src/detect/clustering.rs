//! Clustering: candidates that share pages are one group (union-find over page ids); one
//! site's pages on several addresses count as one.
//!
//! Deterministic: the same events give the same groups in the same order, hence the same swarm
//! ids (`analyze` of one capture twice, a batch fed at once or event by event).

use std::collections::{BTreeMap, HashMap};

use super::{Detector, candidates::Candidate};

fn find(parent: &mut HashMap<u32, u32>, x: u32) -> u32 {
    let mut r = x;
    while let Some(&p) = parent.get(&r) {
        if p == r {
            break;
        }
        r = p;
    }
    parent.insert(x, r);
    r
}

impl Detector {
    /// Groups `cands` (as indices into it) by the pages they share.
    pub(super) fn cluster(&self, cands: &[Candidate]) -> Vec<Vec<usize>> {
        let mut parent: HashMap<u32, u32> = HashMap::new();
        for c in cands {
            for p in &c.pages {
                parent.entry(*p).or_insert(*p);
            }
            let root = find(&mut parent, c.pages[0]);
            for p in &c.pages[1..] {
                let r = find(&mut parent, *p);
                parent.insert(r, root);
            }
        }
        // One site on several addresses (IPv4 and IPv6, or ports): its pages share `Host` and
        // path, and the sources hammering them are one swarm. Pages without a `Host` stay apart.
        let mut by_name: HashMap<(&str, &str, bool), u32> = HashMap::new();
        let mut ids: Vec<u32> = parent.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let page = &self.pages[id as usize].page;
            let Some(host) = page.host.as_deref() else {
                continue;
            };
            match by_name.entry((host, page.path.as_str(), page.handshakes)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(id);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    let (a, b) = (find(&mut parent, id), find(&mut parent, *o.get()));
                    parent.insert(a, b);
                }
            }
        }
        let mut clusters: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, c) in cands.iter().enumerate() {
            let root = find(&mut parent, c.pages[0]);
            clusters.entry(root).or_default().push(i);
        }
        clusters.into_values().collect()
    }
}
