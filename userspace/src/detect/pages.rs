//! Page rates and baselines: which pages run hot at a tick.

use super::{Detector, decay};

impl Detector {
    /// Decays every page's count to `now_ns`, updates its baseline (`dt` seconds since the last
    /// tick) and returns, per page id, whether it runs hot: well above its baseline, or with
    /// hardly any baseline at all.
    pub(super) fn update_pages(&mut self, now_ns: u64, dt: f64) -> Vec<bool> {
        let tau = self.cfg.window.as_nanos() as f64;
        let btau = self.cfg.baseline_window.as_secs_f64();
        let mut hot = vec![false; self.pages.len()];
        for (i, p) in self.pages.iter_mut().enumerate() {
            decay(&mut p.count, p.last_ns, now_ns, tau);
            p.last_ns = p.last_ns.max(now_ns);
            let rate = p.count / self.cfg.window.as_secs_f64();
            let is_hot = rate >= self.cfg.hot_factor * p.baseline_rps
                || p.baseline_rps < self.cfg.cold_baseline_rps;
            hot[i] = is_hot && rate > 0.0;
            if hot[i] {
                p.hot_since_ns.get_or_insert(now_ns);
            } else {
                p.hot_since_ns = None;
            }
            if dt > 0.0 {
                // The baseline follows the rate slowly, and not at all while the page is hot:
                // a long attack must not become the new normal.
                if !hot[i] || p.baseline_rps < self.cfg.cold_baseline_rps {
                    let a = 1.0 - (-dt / btau).exp();
                    p.baseline_rps += a
                        * (rate.min(
                            p.baseline_rps.max(self.cfg.cold_baseline_rps) * self.cfg.hot_factor,
                        ) - p.baseline_rps);
                }
            }
        }
        hot
    }
}
