//! Live swarm defence: kernel samples → requests → detector → policy → rules in the kernel.
//!
//! Two threads, joined by a bounded lock-free SPSC queue (`ringbuf`):
//! - the *reader* polls an [`EventSource`] (the kernel's ring buffer, parsed into request
//!   events) and pushes what it hands out; when the queue is full it counts the overflow and
//!   drops the event — it never blocks, so a slow detector costs samples, never kernel
//!   ring-buffer space;
//! - the *detector* drains the queue into the [`Detector`] and, every [`Settings::tick`], asks it
//!   for swarms, plans rules with the [`Policy`] and hands them to an [`Enforcer`] (the daemon:
//!   journaled, then in the kernel, as one undoable change per swarm and tick).
//!
//! In observe mode the planned rules are kept and shown, not pushed; switching to enforce pushes
//! those still within their TTL (a plan past its TTL is dropped, and its members planned again
//! while they attack). Only a rule that reached the kernel covers its members: a push the
//! kernel refuses is retried after [`RETRY_AFTER`], a rule a guard refused is planned again. When a swarm rule expires, its member may be blocked again (for
//! twice as long) if it resumes the attack; a rule an admin deleted or undid is a pardon and is
//! not pushed again for the same swarm.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use ringbuf::{HeapRb, traits::Split as _};

use crate::{
    Mode, Target,
    dataplane::monotonic_ns,
    detect::{Detector, DetectorConfig, Site, Swarm},
    guard::Guards,
    l7::RequestEvent,
    policy::{PlannedRule, Policy, PolicyConfig},
    sources::{EventSource, Polled, SourceCounters, SourceError, SourceLag},
};

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Detector tuning.
    pub detector: DetectorConfig,
    /// Policy tuning.
    pub policy: PolicyConfig,
    /// How often the detector re-evaluates (the evidence-to-rules latency is at most this plus
    /// the time to commit the rules).
    pub tick: Duration,
    /// Request events the queue between the threads holds.
    pub queue: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            policy: PolicyConfig::default(),
            tick: Duration::from_millis(250),
            queue: 65_536,
        }
    }
}

/// The pipeline's counters, shared with the API.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples read from the ring buffer.
    pub samples: AtomicU64,
    /// Request events parsed from them.
    pub requests: AtomicU64,
    /// Samples that parsed to nothing.
    pub unparsed: AtomicU64,
    /// Events dropped because the queue was full.
    pub overflow: AtomicU64,
    /// TLS hellos put together from several records (a browser's spans two segments).
    pub hellos_reassembled: AtomicU64,
    /// Hellos handed on incomplete: the rest did not come in time.
    pub hellos_timed_out: AtomicU64,
    /// Hellos handed on incomplete: the reassembly's memory cap needed their room.
    pub hellos_dropped: AtomicU64,
    /// Each source after the first (the kernel ring's counters are the fields above): access
    /// logs, as their reader threads last saw them.
    pub others: Mutex<Vec<SourceStatus>>,
}

/// How one event source is doing, for `status` and `swarms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// What it reads (a log path pattern).
    pub name: String,
    /// What it has read.
    pub counters: SourceCounters,
    /// Events dropped because its queue was full.
    pub overflow: u64,
    /// Its latest problem (e.g. `permission denied`), if any.
    pub problem: Option<String>,
    /// How far behind its input it is, as its reader last saw.
    pub lag: Option<SourceLag>,
}

/// A rule the pipeline pushed and believes is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Rule id in the store.
    pub id: u64,
    /// Source address or prefix.
    pub target: Target,
    /// The site it is scoped to.
    pub site: Site,
    /// When it expires.
    pub expires: SystemTime,
}

/// What came of a push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Rules now in the kernel.
    pub landed: Vec<Pushed>,
    /// Rules the daemon's guards refused, with why.
    pub refused: Vec<(String, String)>,
    /// The journal change that holds them, if anything changed.
    pub change: Option<u64>,
}

/// Where planned rules go: the daemon (journal first, then kernel), or a test double.
pub trait Enforcer: Send + Sync + 'static {
    /// The global mode: rules are pushed only in enforce mode.
    fn mode(&self) -> Mode;
    /// The guards every rule passes, as they stand now (the policy plans within them).
    fn guards(&self) -> Guards;
    /// Pushes `rules` for `swarm` and removes the swarm rules `superseded` names, as one change.
    fn push(
        &self,
        swarm: &Swarm,
        rules: &[PlannedRule],
        superseded: &[(Site, Target)],
    ) -> Result<PushOutcome, String>;
    /// Which of `ids` are still in force.
    fn in_force(&self, ids: &[u64]) -> Vec<bool>;
}

/// One swarm as the daemon tracks it.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// The detector's latest view of it (times in monotonic ns).
    pub swarm: Swarm,
    /// Its rules in force.
    pub rules: Vec<Pushed>,
    /// Rules planned and not pushed (observe mode), with when they were planned.
    pub planned: Vec<(PlannedRule, u64)>,
    /// Single-address rules a planned prefix replaces (pushed with the plan).
    pub superseded: Vec<(Site, Target)>,
    /// What the guards refused, newest last (at most [`MAX_REFUSED`]).
    pub refused: Vec<(String, String)>,
    /// Rules pushed over its life.
    pub pushed_total: usize,
    /// The journal changes that pushed them (each undoable).
    pub changes: Vec<u64>,
    /// Rules that expired.
    pub expired: usize,
    /// Rules removed by someone else (delete, undo) before they expired.
    pub pardoned: usize,
    /// Members (or prefixes) an admin pardoned (`swarmwall swarms pardon`): no rule covering
    /// one is planned or pushed for this swarm again.
    pub pardons: Vec<Target>,
    /// When its first rules were in the kernel (monotonic ns).
    pub blocked_ns: Option<u64>,
    /// The impact preview of its last plan.
    pub impact: f64,
    /// After a failed push, no new attempt before this (monotonic ns): a kernel that refuses
    /// costs a journaled change and its revert per attempt.
    retry_at_ns: u64,
    /// The last push failed; its plan waits for the retry.
    push_failed: bool,
}

const SEC_NS: u64 = 1_000_000_000;

/// Refusals kept per swarm.
pub const MAX_REFUSED: usize = 100;

/// How long after a failed push the pipeline tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A swarm no member has behaved as for this long is retired: dropped from the detector, and
/// from the book once none of its rules is in force or planned.
pub const RETIRE_AFTER: Duration = Duration::from_secs(3600);

impl Tracked {
    fn new(swarm: Swarm) -> Self {
        Self {
            swarm,
            rules: Vec::new(),
            planned: Vec::new(),
            superseded: Vec::new(),
            refused: Vec::new(),
            pushed_total: 0,
            changes: Vec::new(),
            expired: 0,
            pardoned: 0,
            pardons: Vec::new(),
            blocked_ns: None,
            impact: 0.0,
            retry_at_ns: 0,
            push_failed: false,
        }
    }

    fn refuse(&mut self, items: impl IntoIterator<Item = (String, String)>) {
        self.refused.extend(items);
        let excess = self.refused.len().saturating_sub(MAX_REFUSED);
        self.refused.drain(..excess);
    }

    /// `blocked`, `reported`, `refused`, `expired` or `detected`.
    pub fn state(&self) -> &'static str {
        if !self.rules.is_empty() {
            "blocked"
        } else if self.push_failed {
            "refused"
        } else if !self.planned.is_empty() {
            "reported"
        } else if self.expired > 0 || self.pardoned > 0 {
            "expired"
        } else if !self.refused.is_empty() {
            "refused"
        } else {
            "detected"
        }
    }
}

/// What the API reads: every swarm seen since the daemon started.
#[derive(Debug, Default)]
pub struct Book {
    /// Swarms by id.
    pub swarms: BTreeMap<u64, Tracked>,
    /// Sources the detector tracks.
    pub tracked_sources: usize,
    /// Whether the pipeline runs.
    pub enabled: bool,
    /// Why it stopped, if a thread failed.
    pub error: Option<String>,
}

impl Book {
    fn fail(book: &Mutex<Book>, why: String) {
        tracing::error!("swarm detection stopped: {why}; rules already in the kernel stay");
        let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
        b.enabled = false;
        b.error.get_or_insert(why);
    }
}

/// Marks the pipeline failed if its thread unwinds (a bug), so the API says so.
struct PanicWatch<'a> {
    book: &'a Mutex<Book>,
    thread: &'static str,
}

impl Drop for PanicWatch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            Book::fail(
                self.book,
                format!("the {} thread panicked (see the log)", self.thread),
            );
        }
    }
}

/// The detector thread's state: detector, policy and the book they fill.
pub struct Engine {
    det: Detector,
    policy: Policy,
    next_prune_ns: u64,
}

impl Engine {
    /// An engine with `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            det: Detector::new(settings.detector.clone()),
            policy: Policy::new(settings.policy.clone()),
            next_prune_ns: 0,
        }
    }

    /// Feeds one request.
    pub fn observe(&mut self, ev: &RequestEvent) {
        self.det.observe(ev);
    }

    /// Feeds `events` in order (faster than one by one: see [`Detector::observe_batch`]).
    pub fn observe_batch(&mut self, events: &[RequestEvent]) {
        self.det.observe_batch(events);
    }

    /// One evaluation at monotonic time `now_ns`: detect, plan, and (in enforce mode) push.
    pub fn tick(&mut self, now_ns: u64, enforcer: &dyn Enforcer, book: &Mutex<Book>) {
        for s in self.det.tick(now_ns) {
            tracing::info!(
                swarm = s.id,
                site = %std::net::SocketAddr::from(s.site),
                members = s.members.len(),
                pages = s.pages.len(),
                confidence = s.confidence,
                "swarm detected or grown"
            );
        }
        let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
        self.settle_rules(&mut b, enforcer);
        // A swarm the detector retired stays in the book while its rules are in force or
        // planned.
        self.det.retire(RETIRE_AFTER, now_ns);
        let live: std::collections::BTreeSet<u64> =
            self.det.swarms().iter().map(|s| s.id).collect();
        b.swarms
            .retain(|id, t| live.contains(id) || !t.rules.is_empty() || !t.planned.is_empty());
        if now_ns >= self.next_prune_ns {
            self.policy.prune(now_ns);
            self.next_prune_ns = now_ns + 60 * SEC_NS;
        }
        // A plan (observe mode) that outlived its TTL would block nobody: its members are
        // planned afresh if they still attack (and a retired swarm leaves the book).
        for t in b.swarms.values_mut() {
            t.planned.retain(|(r, at)| {
                let alive = remaining(r, *at, now_ns).is_some();
                if !alive {
                    self.policy.abandon(r);
                }
                alive
            });
        }
        let guards = enforcer.guards();
        for s in self.det.swarms() {
            let t = match b.swarms.entry(s.id) {
                std::collections::btree_map::Entry::Vacant(v) => v.insert(Tracked::new(s.clone())),
                std::collections::btree_map::Entry::Occupied(o) => {
                    let t = o.into_mut();
                    t.swarm.clone_from(s);
                    t
                }
            };
            if s.active.is_empty() {
                continue;
            }
            let plan = self.policy.plan(s, &self.det, &guards, now_ns);
            if !plan.rules.is_empty() || !plan.refused.is_empty() {
                t.impact = plan.impact;
            }
            t.refuse(plan.refused);
            let pardoned =
                |target: &Target| t.pardons.iter().any(|p| crate::guard::overlaps(p, target));
            let (dropped, rules): (Vec<PlannedRule>, Vec<PlannedRule>) =
                plan.rules.into_iter().partition(|r| pardoned(&r.target));
            // The single-address rules a dropped prefix would have replaced stay in force.
            let superseded: Vec<(Site, Target)> = plan
                .superseded
                .into_iter()
                .filter(|(_, tg)| !dropped.iter().any(|d| d.target.net().contains(&tg.net())))
                .collect();
            t.planned.extend(rules.into_iter().map(|r| (r, now_ns)));
            t.superseded.extend(superseded);
        }
        b.tracked_sources = self.det.tracked_sources() + self.det.tracked_handshake_sources();
        if enforcer.mode() != Mode::Enforce {
            return;
        }
        for t in b.swarms.values_mut() {
            if t.planned.is_empty() || now_ns < t.retry_at_ns {
                continue;
            }
            let planned = std::mem::take(&mut t.planned);
            let superseded = std::mem::take(&mut t.superseded);
            // Planned in observe mode a while ago: push with what is left of the TTL.
            let mut rules: Vec<PlannedRule> = Vec::with_capacity(planned.len());
            for (r, at) in &planned {
                match remaining(r, *at, now_ns) {
                    Some(ttl) => rules.push(PlannedRule { ttl, ..r.clone() }),
                    None => self.policy.abandon(r),
                }
            }
            if rules.is_empty() {
                continue;
            }
            match enforcer.push(&t.swarm, &rules, &superseded) {
                Ok(out) => {
                    t.push_failed = false;
                    // Only what landed is covered; the rest is planned again next tick.
                    for r in &rules {
                        if out
                            .landed
                            .iter()
                            .any(|p| p.site == r.site && p.target == r.target)
                        {
                            self.policy.landed(r, now_ns);
                        } else {
                            self.policy.abandon(r);
                        }
                    }
                    t.rules.retain(|p| {
                        !superseded
                            .iter()
                            .any(|(site, tg)| p.site == *site && p.target == *tg)
                    });
                    t.pushed_total += out.landed.len();
                    t.changes.extend(out.change);
                    if !out.landed.is_empty() && t.blocked_ns.is_none() {
                        t.blocked_ns = Some(monotonic_ns());
                    }
                    t.rules.extend(out.landed);
                    t.refuse(out.refused);
                }
                Err(e) => {
                    // Nothing changed: keep the plan (still pending) and try again later.
                    tracing::error!(swarm = t.swarm.id, "pushing swarm rules: {e}");
                    t.refuse([(format!("swarm {}", t.swarm.id), e)]);
                    t.planned = planned;
                    t.superseded = superseded;
                    t.push_failed = true;
                    t.retry_at_ns = now_ns.saturating_add(RETRY_AFTER.as_nanos() as u64);
                }
            }
        }
    }

    /// Notices swarm rules that left the store: expired ones let their members be blocked again
    /// if they resume; deleted ones are pardons.
    fn settle_rules(&mut self, b: &mut Book, enforcer: &dyn Enforcer) {
        let now = SystemTime::now();
        for t in b.swarms.values_mut() {
            if t.rules.is_empty() {
                continue;
            }
            let ids: Vec<u64> = t.rules.iter().map(|p| p.id).collect();
            let alive = enforcer.in_force(&ids);
            let mut keep = Vec::with_capacity(t.rules.len());
            for (p, alive) in t.rules.drain(..).zip(alive) {
                if alive {
                    keep.push(p);
                } else if p.expires <= now + Duration::from_secs(1) {
                    self.policy.uncover(p.site, p.target);
                    t.expired += 1;
                } else {
                    t.pardoned += 1;
                }
            }
            t.rules = keep;
        }
    }
}

/// What is left at `now_ns` of the TTL of `rule`, planned at `at_ns`; `None` under a second.
fn remaining(rule: &PlannedRule, at_ns: u64, now_ns: u64) -> Option<Duration> {
    let age = Duration::from_nanos(now_ns.saturating_sub(at_ns));
    rule.ttl.checked_sub(age).filter(|d| d.as_secs() >= 1)
}

/// The running pipeline; dropping it stops and joins both threads.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the reader on `source` and the detector feeding `enforcer`, filling `book` and
    /// `counters`.
    pub fn start(
        sources: Vec<Box<dyn EventSource>>,
        enforcer: Arc<dyn Enforcer>,
        settings: Settings,
        book: Arc<Mutex<Book>>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        book.lock().unwrap_or_else(|p| p.into_inner()).enabled = true;
        *counters.others.lock().unwrap_or_else(|p| p.into_inner()) = sources
            .iter()
            .skip(1)
            .map(|s| SourceStatus {
                name: s.name().to_owned(),
                ..SourceStatus::default()
            })
            .collect();
        // One single-producer queue per source, so no reader ever waits on another.
        let mut threads = Vec::new();
        let mut queues = Vec::new();
        for (i, source) in sources.into_iter().enumerate() {
            let (prod, cons) = HeapRb::<RequestEvent>::new(settings.queue.max(1)).split();
            queues.push(cons);
            let (stop, counters, book) =
                (Arc::clone(&stop), Arc::clone(&counters), Arc::clone(&book));
            threads.push(
                std::thread::Builder::new()
                    .name(if i == 0 {
                        "sw-l7-reader".into()
                    } else {
                        format!("sw-log-{i}")
                    })
                    .spawn(move || {
                        let _watch = PanicWatch {
                            book: &book,
                            thread: if i == 0 { "L7 reader" } else { "log reader" },
                        };
                        let name = source.name().to_owned();
                        if let Err(e) = read_loop(source, prod, &counters, i, &stop) {
                            Book::fail(&book, format!("{name}: {e}"));
                        }
                    })?,
            );
        }
        let detector_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sw-detector".into())
                .spawn(move || {
                    let _watch = PanicWatch {
                        book: &book,
                        thread: "swarm detector",
                    };
                    detect_loop(queues, &*enforcer, &settings, &book, &stop)
                })?
        };
        threads.push(detector_thread);
        Ok(Self { stop, threads })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long the reader waits in `poll` before looking at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Reads `source` (the `index`th of the pipeline; 0 is the kernel ring) into `queue`.
fn read_loop(
    mut source: Box<dyn EventSource>,
    mut queue: impl ringbuf::traits::Producer<Item = RequestEvent>,
    counters: &Counters,
    index: usize,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let mut overflow = 0;
    while !stop.load(Ordering::Relaxed) {
        // A full queue drops the event and counts it: the reader never waits on the detector.
        let polled = source.poll(POLL, &mut |ev| {
            if queue.try_push(ev).is_err() {
                overflow += 1;
            }
        })?;
        let c = source.counters();
        if index == 0 {
            counters.samples.store(c.read, Ordering::Relaxed);
            counters.requests.store(c.requests, Ordering::Relaxed);
            counters.unparsed.store(c.unparsed, Ordering::Relaxed);
            counters.overflow.store(overflow, Ordering::Relaxed);
            let h = source.hellos();
            counters
                .hellos_reassembled
                .store(h.reassembled, Ordering::Relaxed);
            counters
                .hellos_timed_out
                .store(h.timed_out, Ordering::Relaxed);
            counters.hellos_dropped.store(h.dropped, Ordering::Relaxed);
        } else if let Some(s) = counters
            .others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(index - 1)
        {
            s.counters = c;
            s.overflow = overflow;
            s.problem = source.problem();
            s.lag = source.lag();
        }
        if polled == Polled::End {
            tracing::info!(source = source.name(), "event source exhausted");
            break;
        }
    }
    Ok(())
}

/// Events the detector takes from the queue before it checks whether a tick is due.
const DRAIN_BATCH: usize = 4096;

fn detect_loop<Q: ringbuf::traits::Consumer<Item = RequestEvent>>(
    mut queues: Vec<Q>,
    enforcer: &dyn Enforcer,
    settings: &Settings,
    book: &Mutex<Book>,
    stop: &AtomicBool,
) {
    let mut engine = Engine::new(settings);
    let tick_ns = settings.tick.as_nanos() as u64;
    let mut next_tick = monotonic_ns() + tick_ns;
    let mut batch = Vec::with_capacity(DRAIN_BATCH);
    while !stop.load(Ordering::Relaxed) {
        let mut n = 0;
        // Each queue gets its share of a batch, so a flood on one source cannot starve another.
        let share = DRAIN_BATCH / queues.len().max(1);
        for queue in &mut queues {
            batch.extend(queue.pop_iter().take(share));
            engine.observe_batch(&batch);
            n += batch.len();
            batch.clear();
        }
        let now = monotonic_ns();
        if now >= next_tick {
            engine.tick(now, enforcer, book);
            next_tick = now + tick_ns;
        } else if n == 0 {
            let wait = Duration::from_nanos(next_tick - now).min(Duration::from_millis(5));
            std::thread::sleep(wait);
        }
    }
}

/// The addresses of `swarm`'s members, as strings (for views and logs).
pub fn member_strings(swarm: &Swarm) -> Vec<String> {
    swarm.members.iter().map(IpAddr::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::Kind;

    /// Records pushes; rules get ids 1, 2, ...; `in_force` answers from `alive`.
    #[derive(Default)]
    struct Fake {
        mode: Mutex<Option<Mode>>,
        pushes: Mutex<Vec<Vec<PlannedRule>>>,
        removed: Mutex<Vec<(Site, Target)>>,
        alive: Mutex<BTreeMap<u64, bool>>,
        allow: Vec<Target>,
        /// While set, every push fails (as a kernel refusal does).
        fail: Mutex<bool>,
        /// Targets the daemon's guards refuse at push time.
        refuse: Mutex<Vec<Target>>,
    }

    impl Enforcer for Fake {
        fn mode(&self) -> Mode {
            self.mode.lock().unwrap().unwrap_or(Mode::Enforce)
        }
        fn guards(&self) -> Guards {
            Guards::new(self.allow.clone(), vec![])
        }
        fn push(
            &self,
            _swarm: &Swarm,
            rules: &[PlannedRule],
            superseded: &[(Site, Target)],
        ) -> Result<PushOutcome, String> {
            if *self.fail.lock().unwrap() {
                return Err("the kernel refused the change: map full".into());
            }
            let mut alive = self.alive.lock().unwrap();
            let mut out = PushOutcome::default();
            let refuse = self.refuse.lock().unwrap();
            for r in rules {
                if refuse.contains(&r.target) {
                    out.refused
                        .push((r.target.to_string(), "guard 'own address'".into()));
                    continue;
                }
                let id = alive.len() as u64 + 1;
                alive.insert(id, true);
                out.landed.push(Pushed {
                    id,
                    target: r.target,
                    site: r.site,
                    expires: SystemTime::now() + r.ttl,
                });
            }
            self.pushes.lock().unwrap().push(
                rules
                    .iter()
                    .filter(|r| !refuse.contains(&r.target))
                    .cloned()
                    .collect(),
            );
            self.removed.lock().unwrap().extend_from_slice(superseded);
            Ok(out)
        }
        fn in_force(&self, ids: &[u64]) -> Vec<bool> {
            let alive = self.alive.lock().unwrap();
            ids.iter()
                .map(|id| alive.get(id).copied().unwrap_or(false))
                .collect()
        }
    }

    const SEC: u64 = 1_000_000_000;

    fn ev(t: u64, src: IpAddr, path: &str, ua: &str) -> RequestEvent {
        RequestEvent {
            ts_ns: t,
            src,
            dst: "203.0.113.10".parse().unwrap(),
            dst_port: 80,
            kind: Kind::Http,
            host: Some("shop.example".into()),
            ja4: None,
            path: path.into(),
            user_agent: Some(ua.into()),
            referer: None,
            ..RequestEvent::default()
        }
    }

    fn bot(i: u8) -> IpAddr {
        IpAddr::from([100, 64, (i / 4) * 2, i % 4 + 1])
    }

    /// 12 bots (4 per /24), 4 req/s each on two pages, and one browsing visitor in each of
    /// their /24s (so no prefix collapses); from `from` s to `to` s.
    fn attack(engine: &mut Engine, from: u64, to: u64, fake: &Fake, book: &Mutex<Book>) {
        for s in from..to {
            for k in 0..4 {
                let t = s * SEC + k * SEC / 4;
                for i in 0..12u8 {
                    let page = if k % 2 == 0 {
                        "/gallery/1"
                    } else {
                        "/gallery/2"
                    };
                    engine.observe(&ev(t + i as u64, bot(i), page, "bot/1.0"));
                }
            }
            for n in 0..3u8 {
                let visitor = IpAddr::from([100, 64, n * 2, 200]);
                engine.observe(&ev(s * SEC + 1, visitor, "/", "browser"));
                engine.observe(&ev(s * SEC + 2, visitor, "/style.css", "browser"));
            }
            engine.tick(s * SEC + SEC / 2, fake, book);
        }
    }

    #[test]
    fn enforce_pushes_each_member_once_scoped_to_the_site() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        let pushes = fake.pushes.lock().unwrap();
        let targets: Vec<Target> = pushes.iter().flatten().map(|r| r.target).collect();
        assert_eq!(targets.len(), 12, "{targets:?}");
        for i in 0..12 {
            assert!(targets.contains(&Target::Addr(bot(i))));
        }
        for r in pushes.iter().flatten() {
            assert_eq!(r.site, ("203.0.113.10".parse().unwrap(), 80));
        }
        let b = book.lock().unwrap();
        let t = b.swarms.values().next().unwrap();
        assert_eq!(t.state(), "blocked");
        assert_eq!(t.rules.len(), 12);
        assert!(t.blocked_ns.is_some());
    }

    #[test]
    fn observe_mode_plans_and_enforce_pushes_the_plan() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        *fake.mode.lock().unwrap() = Some(Mode::Observe);
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        assert!(fake.pushes.lock().unwrap().is_empty());
        {
            let b = book.lock().unwrap();
            let t = b.swarms.values().next().unwrap();
            assert_eq!(t.state(), "reported");
            assert_eq!(t.planned.len(), 12);
        }
        *fake.mode.lock().unwrap() = Some(Mode::Enforce);
        engine.tick(9 * SEC, &fake, &book);
        assert_eq!(fake.pushes.lock().unwrap().concat().len(), 12);
        assert_eq!(book.lock().unwrap().swarms[&1].state(), "blocked");
    }

    #[test]
    fn an_expired_member_that_resumes_is_blocked_again_for_longer_a_pardoned_one_is_not() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        let first: Vec<PlannedRule> = fake.pushes.lock().unwrap().concat();
        // Rule 1 "expires" (its expiry moved to the past), rule 2 is deleted by an admin.
        {
            let mut b = book.lock().unwrap();
            let t = b.swarms.get_mut(&1).unwrap();
            t.rules[0].expires = SystemTime::now() - Duration::from_secs(5);
            let mut alive = fake.alive.lock().unwrap();
            alive.insert(t.rules[0].id, false);
            alive.insert(t.rules[1].id, false);
        }
        let (expired, pardoned) = {
            let b = book.lock().unwrap();
            let t = &b.swarms[&1];
            (t.rules[0].target, t.rules[1].target)
        };
        attack(&mut engine, 8, 12, &fake, &book);
        let pushes = fake.pushes.lock().unwrap();
        let again: Vec<&PlannedRule> = pushes.iter().flatten().skip(first.len()).collect();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].target, expired);
        let old_ttl = first.iter().find(|r| r.target == expired).unwrap().ttl;
        assert_eq!(again[0].ttl, old_ttl * 2);
        assert!(again.iter().all(|r| r.target != pardoned));
        let b = book.lock().unwrap();
        assert_eq!((b.swarms[&1].expired, b.swarms[&1].pardoned), (1, 1));
    }

    #[test]
    fn a_pardoned_member_is_not_blocked_again_even_after_its_rule_expired() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        let first = fake.pushes.lock().unwrap().concat().len();
        // Its rule expired (which alone lets a resuming member be blocked again), and an admin
        // pardoned it.
        let pardoned = {
            let mut b = book.lock().unwrap();
            let t = b.swarms.get_mut(&1).unwrap();
            t.rules[0].expires = SystemTime::now() - Duration::from_secs(5);
            fake.alive.lock().unwrap().insert(t.rules[0].id, false);
            t.pardons.push(t.rules[0].target);
            t.rules[0].target
        };
        attack(&mut engine, 8, 12, &fake, &book);
        let pushes = fake.pushes.lock().unwrap();
        let again: Vec<&PlannedRule> = pushes.iter().flatten().skip(first).collect();
        assert!(again.iter().all(|r| r.target != pardoned), "{again:?}");
    }

    #[test]
    fn idle_swarms_are_retired_once_their_rules_are_gone() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        let later = 8 * SEC + RETIRE_AFTER.as_nanos() as u64 + SEC;
        engine.tick(later, &fake, &book);
        // Retired by the detector, but its rules are still in force: the book keeps it.
        assert!(engine.det.swarms().is_empty());
        assert_eq!(book.lock().unwrap().swarms.len(), 1);
        for alive in fake.alive.lock().unwrap().values_mut() {
            *alive = false;
        }
        for t in book.lock().unwrap().swarms.values_mut() {
            for r in &mut t.rules {
                r.expires = SystemTime::now();
            }
        }
        engine.tick(later + SEC, &fake, &book);
        assert!(book.lock().unwrap().swarms.is_empty());
    }

    #[test]
    fn a_thread_that_panics_marks_detection_stopped() {
        let book = Arc::new(Mutex::new(Book {
            enabled: true,
            ..Book::default()
        }));
        let b = Arc::clone(&book);
        let r = std::thread::spawn(move || {
            let _watch = PanicWatch {
                book: &b,
                thread: "swarm detector",
            };
            panic!("a bug");
        })
        .join();
        assert!(r.is_err());
        let b = book.lock().unwrap();
        assert!(!b.enabled);
        assert!(
            b.error
                .as_deref()
                .unwrap()
                .contains("swarm detector thread panicked")
        );
    }

    #[test]
    fn allow_listed_members_are_refused_not_pushed() {
        let fake = Fake {
            allow: vec![Target::Addr(bot(0))],
            ..Fake::default()
        };
        let book = Mutex::new(Book::default());
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        let pushed: Vec<Target> = fake
            .pushes
            .lock()
            .unwrap()
            .concat()
            .iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(pushed.len(), 11);
        assert!(!pushed.contains(&Target::Addr(bot(0))));
        let b = book.lock().unwrap();
        assert!(
            b.swarms[&1]
                .refused
                .iter()
                .any(|(t, why)| *t == bot(0).to_string() && why.contains("allow")),
            "{:?}",
            b.swarms[&1].refused
        );
    }

    fn pushed(fake: &Fake) -> Vec<Target> {
        fake.pushes
            .lock()
            .unwrap()
            .concat()
            .iter()
            .map(|r| r.target)
            .collect()
    }

    #[test]
    fn a_failed_push_is_retried_on_a_later_tick() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        *fake.fail.lock().unwrap() = true;
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        assert!(pushed(&fake).is_empty());
        assert_eq!(book.lock().unwrap().swarms[&1].state(), "refused");
        // The kernel takes rules again: every member is blocked, each once.
        *fake.fail.lock().unwrap() = false;
        attack(&mut engine, 8, 30, &fake, &book);
        let targets = pushed(&fake);
        assert_eq!(targets.len(), 12, "{targets:?}");
        for i in 0..12 {
            assert!(targets.contains(&Target::Addr(bot(i))));
        }
        assert_eq!(book.lock().unwrap().swarms[&1].state(), "blocked");
    }

    #[test]
    fn a_rule_refused_at_push_time_is_pushed_once_the_refusal_is_gone() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        fake.refuse.lock().unwrap().push(Target::Addr(bot(3)));
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        assert_eq!(pushed(&fake).len(), 11);
        assert!(!pushed(&fake).contains(&Target::Addr(bot(3))));
        fake.refuse.lock().unwrap().clear();
        attack(&mut engine, 8, 30, &fake, &book);
        let targets = pushed(&fake);
        assert_eq!(targets.len(), 12, "{targets:?}");
        assert!(targets.contains(&Target::Addr(bot(3))));
    }

    #[test]
    fn an_observe_plan_that_ages_out_is_planned_again_and_enforce_blocks_it() {
        let (fake, book) = (Fake::default(), Mutex::new(Book::default()));
        *fake.mode.lock().unwrap() = Some(Mode::Observe);
        let mut engine = Engine::new(&Settings::default());
        attack(&mut engine, 0, 8, &fake, &book);
        // Long past the plans' TTL the bots attack again, still in observe mode...
        let later = Settings::default().policy.base_ttl.as_secs() + 100;
        attack(&mut engine, later, later + 8, &fake, &book);
        assert!(pushed(&fake).is_empty());
        {
            let b = book.lock().unwrap();
            let t = &b.swarms[&1];
            assert_eq!(t.state(), "reported");
            assert_eq!(t.planned.len(), 12, "{:?}", t.planned);
        }
        // ...and enforce blocks every one of them.
        *fake.mode.lock().unwrap() = Some(Mode::Enforce);
        attack(&mut engine, later + 8, later + 10, &fake, &book);
        assert_eq!(pushed(&fake).len(), 12, "{:?}", pushed(&fake));
        assert_eq!(book.lock().unwrap().swarms[&1].state(), "blocked");
    }

    /// Hands out `n` events on its first poll, then ends.
    struct Burst {
        n: u64,
        counters: crate::sources::SourceCounters,
    }

    impl EventSource for Burst {
        fn name(&self) -> &str {
            "burst"
        }
        fn poll(
            &mut self,
            _timeout: Duration,
            out: &mut dyn FnMut(RequestEvent),
        ) -> Result<Polled, SourceError> {
            for i in 0..std::mem::take(&mut self.n) {
                self.counters.read += 1;
                self.counters.requests += 1;
                out(ev(i, bot(0), "/", "bot/1.0"));
            }
            Ok(Polled::End)
        }
        fn counters(&self) -> crate::sources::SourceCounters {
            self.counters
        }
    }

    #[test]
    fn the_reader_drops_and_counts_what_the_queue_cannot_take_never_waiting() {
        let (prod, mut cons) = HeapRb::<RequestEvent>::new(8).split();
        let counters = Counters::default();
        let source = Box::new(Burst {
            n: 20,
            counters: Default::default(),
        });
        read_loop(source, prod, &counters, 0, &AtomicBool::new(false)).unwrap();
        assert_eq!(counters.samples.load(Ordering::Relaxed), 20);
        assert_eq!(counters.requests.load(Ordering::Relaxed), 20);
        assert_eq!(counters.overflow.load(Ordering::Relaxed), 12);
        let mut queued = 0;
        while ringbuf::traits::Consumer::try_pop(&mut cons).is_some() {
            queued += 1;
        }
        assert_eq!(queued, 8);
    }

    #[test]
    fn a_second_source_reports_in_its_own_slot_not_the_kernel_s() {
        let (prod, _cons) = HeapRb::<RequestEvent>::new(4).split();
        let counters = Counters::default();
        *counters.others.lock().unwrap() = vec![SourceStatus {
            name: "/var/log/nginx/access.log".into(),
            ..SourceStatus::default()
        }];
        let source = Box::new(Burst {
            n: 6,
            counters: Default::default(),
        });
        read_loop(source, prod, &counters, 1, &AtomicBool::new(false)).unwrap();
        assert_eq!(counters.samples.load(Ordering::Relaxed), 0);
        assert_eq!(counters.overflow.load(Ordering::Relaxed), 0);
        let others = counters.others.lock().unwrap();
        assert_eq!(others[0].counters.read, 6);
        assert_eq!(others[0].overflow, 2);
        assert_eq!(others[0].name, "/var/log/nginx/access.log");
    }
}
