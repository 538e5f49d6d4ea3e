//! What one source asked for: its few most requested pages (for a TLS source, the names it
//! opened connections to), each with a decayed count. A source with more pages than fit is not
//! concentrated anyway, so the weakest page gives way and its weight is kept as "other".

use std::collections::BTreeSet;

use smallvec::SmallVec;

use super::{MAX_TRACKED_PAGES, PageState};

#[derive(Clone, Copy, Debug, Default)]
struct PageCount {
    page: u32,
    generation: u32,
    count: f64,
    first_ns: u64,
}

/// Pages and their counts, as [`PageCounts::top`] gives them: on the stack, since a tick asks
/// for every watched source's.
pub(super) type Top = SmallVec<[(u32, f64); MAX_TRACKED_PAGES]>;

/// Whether one of `top`'s pages runs hot (`hot` as [`super::Detector::update_pages`] gives it).
pub(super) fn any_hot(top: &[(u32, f64)], hot: &[bool]) -> bool {
    top.iter()
        .any(|p| hot.get(p.0 as usize).copied().unwrap_or(false))
}

/// A source's counts per page (at most [`MAX_TRACKED_PAGES`]).
#[derive(Clone, Debug, Default)]
pub(super) struct PageCounts(SmallVec<[PageCount; MAX_TRACKED_PAGES]>);

/// The factor that decays a count over the time from `last` to `now` (time constant `tau_ns`).
pub(super) fn decay_factor(last: u64, now: u64, tau_ns: f64) -> f64 {
    if now > last {
        (-((now - last) as f64) / tau_ns).exp()
    } else {
        1.0
    }
}

/// Whether the count `generation` of slot `page` still names the page in it.
fn current(pages: &[PageState], page: u32, generation: u32) -> bool {
    pages
        .get(page as usize)
        .is_some_and(|p| p.generation == generation)
}

impl PageCounts {
    /// Forgets the counts of page slots recycled for other pages since.
    pub(super) fn forget_recycled(&mut self, pages: &[PageState]) {
        self.0.retain(|pc| current(pages, pc.page, pc.generation));
    }

    /// Decays every count by `factor`.
    pub(super) fn decay(&mut self, factor: f64) {
        for pc in &mut self.0 {
            pc.count *= factor;
        }
    }

    /// Counts one request at `now` to `page` (slot generation `generation`). When no slot is
    /// free the weakest page gives way; returns the weight it had (0 otherwise).
    pub(super) fn count(&mut self, page: u32, generation: u32, now: u64) -> f64 {
        let fresh = PageCount {
            page,
            generation,
            count: 1.0,
            first_ns: now,
        };
        if let Some(pc) = self.0.iter_mut().find(|pc| pc.page == page) {
            pc.count += 1.0;
            0.0
        } else if self.0.len() < MAX_TRACKED_PAGES {
            self.0.push(fresh);
            0.0
        } else if let Some(weakest) = self.0.iter_mut().min_by(|a, b| a.count.total_cmp(&b.count)) {
            std::mem::replace(weakest, fresh).count
        } else {
            0.0
        }
    }

    /// The pages a source concentrates on at a tick: its `max_pages` most requested current
    /// ones, counts scaled by `factor`, and the sum of those counts; pages under one request
    /// are left out of the list (a stray request is no concentration), not out of the sum.
    pub(super) fn top(&self, pages: &[PageState], factor: f64, max_pages: usize) -> (Top, f64) {
        let mut top: Top = self
            .0
            .iter()
            .filter(|pc| current(pages, pc.page, pc.generation))
            .map(|pc| (pc.page, pc.count * factor))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(max_pages);
        let sum = top.iter().map(|p| p.1).sum();
        top.retain(|p| p.1 >= 1.0);
        (top, sum)
    }

    /// How many current pages have a count of at least `min` once scaled by `factor`.
    pub(super) fn viewed(&self, pages: &[PageState], factor: f64, min: f64) -> usize {
        self.0
            .iter()
            .filter(|pc| current(pages, pc.page, pc.generation) && pc.count * factor >= min)
            .count()
    }

    /// When the first request to one of `pages` was counted.
    pub(super) fn first_ns(&self, pages: &BTreeSet<u32>) -> Option<u64> {
        self.0
            .iter()
            .filter(|pc| pages.contains(&pc.page))
            .map(|pc| pc.first_ns)
            .min()
    }
}
