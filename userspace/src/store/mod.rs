//! The rule store: the daemon's source of truth for block rules, allow entries and the global
//! mode. Every change is one line of an append-only journal, so the whole history can be listed
//! and any change undone; a snapshot makes opening fast.
//!
//! # Files
//!
//! All in the store's directory (created with mode 0700, locked with `flock` while a [`Store`]
//! is open, so a second process gets [`StoreError::Locked`] instead of a mixed-up journal):
//!
//! - `journal.jsonl`: one line per [`Change`], oldest first, never truncated by snapshots:
//!   `{"crc":<CRC-32 of the body>,"change":<body>}` where the body is
//!   `{"id":7,"at":"2024-05-01T12:00:00.000000000Z","actor":"admin","reason":"…",
//!   "ops":[{"op":"add_rule","id":3,"target":"198.51.100.0/24","action":"drop",
//!   "scope":{"dst":"203.0.113.5","proto":"tcp","port":443},"expires_at":"…","created_at":"…",
//!   "actor":"admin","reason":"…"}, {"op":"set_mode","from":"enforce","to":"observe"}, …],
//!   "undoes":5}`. Other ops are `remove_rule` (same fields as `add_rule`), `add_allow` and
//!   `remove_allow` (`target`, `created_at`, `actor`, `reason`), and `repair` (`what`,
//!   `original`: a repair by `swarmwall rules repair`, no effect on the state). Absent optional
//!   fields are left out; times are RFC 3339 in UTC with nanoseconds. An *update* of a rule (a
//!   new expiry) is a `remove_rule` of the old record followed by an `add_rule` of the new one
//!   under the same id, in one change, the two records equal but for `expires_at`.
//! - `snapshot.json`: `{"crc":…,"snapshot":{"format":1,"last_change":…,"next_change_id":…,
//!   "next_rule_id":…,"mode":"enforce","rules":[…],"allow":[…]}}`, replaced atomically
//!   (`snapshot.json.tmp`, fsync, rename, fsync of the directory).
//! - `journal.jsonl.damaged-<unix seconds>[.<n>]`, `snapshot.json.damaged-…`: copies of damaged
//!   files, kept for a human; never overwritten.
//!
//! # Durability and recovery
//!
//! [`Store::commit`] appends one line and `fdatasync`s it before it changes the in-memory state
//! or returns `Ok`, so a crash never loses a change whose commit returned. A crash mid-append
//! can only leave the **last** line unreadable (cut, not JSON, failing its checksum):
//! [`Store::open`] drops that line, copies the original aside, rewrites the journal atomically
//! and says so in a warning. Damage anywhere else — a bad line with intact lines after it, a
//! well-formed change that does not apply, a journal shorter than its snapshot — is no crash
//! artefact, and cutting the journal there would silently remove rules: `open` refuses with
//! [`StoreError::Damaged`], which names the line and what would be lost, and changes no file.
//! [`repair`] (`swarmwall rules repair`) is the explicit way out. A missing or damaged snapshot
//! is rebuilt from the journal, which is the source of truth.

mod codec;
mod files;
mod recovery;
#[cfg(test)]
mod tests;

#[cfg(test)]
use recovery::parse_line;
use recovery::scan_journal;
pub use recovery::{Damaged, Diagnosis, Repair, RepairOutcome, repair};

use std::{
    cmp::max,
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{Action, Mode, Scope, Target};
use files::io_err;

/// The journal's file name.
const JOURNAL: &str = "journal.jsonl";
/// The snapshot's file name.
const SNAPSHOT: &str = "snapshot.json";
/// Snapshot format written and understood.
const SNAPSHOT_FORMAT: u32 = 1;
/// [`Store::commit`] takes a snapshot after this many changes.
const SNAPSHOT_EVERY: usize = 1000;
/// The actor of changes the store makes itself.
const SELF_ACTOR: &str = "swarmwall";

/// A block rule as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// Rule id: unique over the store's lifetime, never reused (see [`Store::next_rule_id`]).
    pub id: u64,
    /// The source address or prefix.
    #[serde(with = "codec::target")]
    pub target: Target,
    /// What happens to matching packets.
    #[serde(with = "codec::action")]
    pub action: Action,
    /// Which traffic it applies to.
    #[serde(with = "codec::scope", default, skip_serializing_if = "Scope::is_any")]
    pub scope: Scope,
    /// When the rule expires ([`Store::expire`] removes it); `None` for a permanent rule.
    #[serde(
        with = "codec::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<SystemTime>,
    /// When it was created.
    #[serde(with = "codec::time")]
    pub created_at: SystemTime,
    /// Who created it.
    pub actor: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An allow-list entry: traffic from `target` is never blocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRecord {
    /// The allowed address or prefix.
    #[serde(with = "codec::target")]
    pub target: Target,
    /// When it was added.
    #[serde(with = "codec::time")]
    pub created_at: SystemTime,
    /// Who added it.
    pub actor: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One step of a [`Change`]. Removals carry the whole record so that they can be undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Adds a rule; its id must be free (and, outside an undo, never used before).
    AddRule(RuleRecord),
    /// Removes a rule; the record must equal the stored one.
    RemoveRule(RuleRecord),
    /// Adds an allow entry; its target must not be on the allow list.
    AddAllow(AllowRecord),
    /// Removes an allow entry; the record must equal the stored one.
    RemoveAllow(AllowRecord),
    /// Records a repair of the journal (`swarmwall rules repair`); changes no state and cannot
    /// be undone.
    Repair {
        /// What the repair did, for humans.
        what: String,
        /// Where the journal as it was before the repair is kept.
        original: String,
        /// Rule ids below this were handed out before the repair (by lines it dropped, or a
        /// snapshot it set aside) and stay used.
        #[serde(default)]
        next_rule_id: u64,
    },
    /// Changes the global mode; `from` must be the current mode and differ from `to`.
    SetMode {
        /// The mode before.
        #[serde(with = "codec::mode")]
        from: Mode,
        /// The mode after.
        #[serde(with = "codec::mode")]
        to: Mode,
    },
}

impl Op {
    /// The op that reverses this one.
    fn inverse(&self) -> Op {
        match self {
            Op::AddRule(r) => Op::RemoveRule(r.clone()),
            Op::RemoveRule(r) => Op::AddRule(r.clone()),
            Op::AddAllow(a) => Op::RemoveAllow(a.clone()),
            Op::RemoveAllow(a) => Op::AddAllow(a.clone()),
            Op::SetMode { from, to } => Op::SetMode {
                from: *to,
                to: *from,
            },
            Op::Repair { .. } => self.clone(),
        }
    }
}

/// One committed, all-or-nothing change: a journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Change id: increasing, never reused.
    pub id: u64,
    /// When it was committed.
    #[serde(with = "codec::time")]
    pub at: SystemTime,
    /// Who made it (`swarmwall` for expiry).
    pub actor: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it did, in order.
    pub ops: Vec<Op>,
    /// The change this one undoes, if it is an undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
}

/// What the store holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Block rules by id.
    pub rules: BTreeMap<u64, RuleRecord>,
    /// Allow entries by target.
    pub allow: BTreeMap<Target, AllowRecord>,
    /// Global mode.
    pub mode: Mode,
}

impl Default for State {
    /// No rules, no allow entries, enforcing.
    fn default() -> Self {
        Self {
            rules: BTreeMap::new(),
            allow: BTreeMap::new(),
            mode: Mode::Enforce,
        }
    }
}

/// Errors of the rule store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("rule store file {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process (or another [`Store`] in this one) has the store open.
    #[error("the rule store {} is in use by another process (is a swarmwall daemon running?)", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store's files contradict each other in a way that recovery must not guess about.
    #[error("the rule store file {} is unusable: {why}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The journal is damaged where a crash cannot have damaged it; nothing was changed. See
    /// [`repair`].
    #[error("{0}")]
    Damaged(Box<Damaged>),
    /// An op does not apply to the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A change without ops.
    #[error("a change needs at least one operation")]
    Empty,
    /// A change the store cannot record (e.g. a time outside the years 1970 to 9999).
    #[error("invalid change: {0}")]
    Invalid(String),
    /// No change with that id.
    #[error("no change with id {id}")]
    NoSuchChange {
        /// The id asked for.
        id: u64,
    },
    /// Every part of the change no longer applies.
    #[error("nothing to undo in change {id}: {why}")]
    NothingToUndo {
        /// The change asked for.
        id: u64,
        /// Why nothing applies.
        why: String,
    },
}

/// The state, the history and the id high-water marks: what the journal replays into.
#[derive(Debug)]
struct Book {
    state: State,
    changes: Vec<Change>,
    undone_by: HashMap<u64, u64>,
    next_rule_id: u64,
    next_change_id: u64,
}

impl Book {
    fn new() -> Self {
        Self {
            state: State::default(),
            changes: Vec::new(),
            undone_by: HashMap::new(),
            next_rule_id: 1,
            next_change_id: 1,
        }
    }

    fn change(&self, id: u64) -> Option<&Change> {
        let i = self.changes.binary_search_by_key(&id, |c| c.id).ok()?;
        self.changes.get(i)
    }

    /// Checks `ops` as one change against the current state, in order, without changing it.
    fn check(&self, ops: &[Op], undoes: Option<u64>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Err(StoreError::Empty);
        }
        if let Some(id) = undoes
            && self.change(id).is_none()
        {
            return Err(StoreError::NoSuchChange { id });
        }
        let mut draft = Draft::new(&self.state);
        // Rules this change removes: adding one back in the same change with nothing but
        // another expiry is an update of that rule, not the reuse of an old id.
        let mut removed: HashMap<u64, &RuleRecord> = HashMap::new();
        for op in ops {
            if let Op::RemoveRule(r) = op {
                removed.insert(r.id, r);
            }
            if let Op::AddRule(r) = op {
                if r.id == 0 {
                    return Err(StoreError::Conflict("rule id 0 is reserved".into()));
                }
                let update = removed.get(&r.id).is_some_and(|old| {
                    RuleRecord {
                        expires_at: r.expires_at,
                        ..(*old).clone()
                    } == *r
                });
                if undoes.is_none() && r.id < self.next_rule_id && !update {
                    return Err(StoreError::Conflict(format!(
                        "rule id {} was used before; the next new id is {}",
                        r.id, self.next_rule_id
                    )));
                }
            }
            draft.apply(op).map_err(StoreError::Conflict)?;
        }
        Ok(())
    }

    /// Applies a checked change to the state and records it.
    fn apply(&mut self, change: Change) {
        for op in &change.ops {
            match op {
                Op::AddRule(r) => {
                    self.state.rules.insert(r.id, r.clone());
                }
                Op::RemoveRule(r) => {
                    self.state.rules.remove(&r.id);
                }
                Op::AddAllow(a) => {
                    self.state.allow.insert(a.target, a.clone());
                }
                Op::RemoveAllow(a) => {
                    self.state.allow.remove(&a.target);
                }
                Op::SetMode { to, .. } => self.state.mode = *to,
                Op::Repair { .. } => {}
            }
        }
        self.record(change);
    }

    /// Adds a change whose effect the state already has to the history.
    fn record(&mut self, change: Change) {
        for op in &change.ops {
            match op {
                Op::AddRule(r) => {
                    self.next_rule_id = max(self.next_rule_id, r.id.saturating_add(1))
                }
                Op::Repair { next_rule_id, .. } => {
                    self.next_rule_id = max(self.next_rule_id, *next_rule_id)
                }
                _ => {}
            }
        }
        self.next_change_id = max(self.next_change_id, change.id.saturating_add(1));
        if let Some(undone) = change.undoes {
            self.undone_by.insert(undone, change.id);
        }
        self.changes.push(change);
    }
}

/// The state with some ops applied on top, borrowed rather than copied.
struct Draft<'a> {
    base: &'a State,
    rules: HashMap<u64, Option<&'a RuleRecord>>,
    allow: HashMap<Target, Option<&'a AllowRecord>>,
    mode: Mode,
}

impl<'a> Draft<'a> {
    fn new(base: &'a State) -> Self {
        Self {
            base,
            rules: HashMap::new(),
            allow: HashMap::new(),
            mode: base.mode,
        }
    }

    fn rule(&self, id: u64) -> Option<&'a RuleRecord> {
        match self.rules.get(&id) {
            Some(r) => *r,
            None => self.base.rules.get(&id),
        }
    }

    fn allowed(&self, target: &Target) -> Option<&'a AllowRecord> {
        match self.allow.get(target) {
            Some(a) => *a,
            None => self.base.allow.get(target),
        }
    }

    /// Applies `op` if it applies; otherwise says why not.
    fn apply(&mut self, op: &'a Op) -> Result<(), String> {
        match op {
            Op::AddRule(r) => {
                if self.rule(r.id).is_some() {
                    return Err(format!("rule {} already exists", r.id));
                }
                self.rules.insert(r.id, Some(r));
            }
            Op::RemoveRule(r) => match self.rule(r.id) {
                None => return Err(format!("rule {} does not exist", r.id)),
                Some(cur) if cur != r => {
                    return Err(format!("rule {} differs from the stored one", r.id));
                }
                Some(_) => {
                    self.rules.insert(r.id, None);
                }
            },
            Op::AddAllow(a) => {
                if self.allowed(&a.target).is_some() {
                    return Err(format!("{} is already on the allow list", a.target));
                }
                self.allow.insert(a.target, Some(a));
            }
            Op::RemoveAllow(a) => match self.allowed(&a.target) {
                None => return Err(format!("{} is not on the allow list", a.target)),
                Some(cur) if cur != a => {
                    return Err(format!(
                        "the allow entry for {} differs from the stored one",
                        a.target
                    ));
                }
                Some(_) => {
                    self.allow.insert(a.target, None);
                }
            },
            Op::SetMode { from, to } => {
                if self.mode != *from {
                    return Err(format!(
                        "the mode is {}, not {}",
                        codec::mode_text(self.mode),
                        codec::mode_text(*from)
                    ));
                }
                if from == to {
                    return Err(format!("the mode is already {}", codec::mode_text(*to)));
                }
                self.mode = *to;
            }
            Op::Repair { .. } => {}
        }
        Ok(())
    }
}

/// The snapshot file's body as written.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    last_change: u64,
    next_change_id: u64,
    next_rule_id: u64,
    #[serde(with = "codec::mode")]
    mode: Mode,
    rules: Vec<&'a RuleRecord>,
    allow: Vec<&'a AllowRecord>,
}

/// The snapshot file's body as read.
#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    last_change: u64,
    next_change_id: u64,
    next_rule_id: u64,
    #[serde(with = "codec::mode")]
    mode: Mode,
    rules: Vec<RuleRecord>,
    allow: Vec<AllowRecord>,
}

/// A loaded, self-consistent snapshot.
struct Snapshot {
    state: State,
    last_change: u64,
    next_change_id: u64,
    next_rule_id: u64,
}

enum SnapshotLoad {
    Missing,
    Loaded(Snapshot),
    Damaged(String),
}

fn read_snapshot(path: &Path) -> Result<SnapshotLoad, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(match decode_snapshot(&bytes) {
            Ok(s) => SnapshotLoad::Loaded(s),
            Err(why) => SnapshotLoad::Damaged(why),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SnapshotLoad::Missing),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let body = codec::unframe("snapshot", text.strip_suffix('\n').unwrap_or(text))?;
    let s: SnapshotIn = serde_json::from_str(body).map_err(|e| format!("not a snapshot: {e}"))?;
    if s.format != SNAPSHOT_FORMAT {
        return Err(format!(
            "format {} (this swarmwall reads format {SNAPSHOT_FORMAT})",
            s.format
        ));
    }
    if s.last_change >= s.next_change_id {
        return Err(format!(
            "last change {} is not below the next change id {}",
            s.last_change, s.next_change_id
        ));
    }
    let mut state = State {
        mode: s.mode,
        ..State::default()
    };
    for r in s.rules {
        if r.id == 0 || r.id >= s.next_rule_id {
            return Err(format!(
                "rule id {} is outside 1 to {}",
                r.id,
                s.next_rule_id.saturating_sub(1)
            ));
        }
        if let Some(dup) = state.rules.insert(r.id, r) {
            return Err(format!("rule {} appears twice", dup.id));
        }
    }
    for a in s.allow {
        if let Some(dup) = state.allow.insert(a.target, a) {
            return Err(format!("allow entry {} appears twice", dup.target));
        }
    }
    Ok(Snapshot {
        state,
        last_change: s.last_change,
        next_change_id: s.next_change_id,
        next_rule_id: s.next_rule_id,
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// What [`Store::open`] says about a torn last line it cut off, keeping `kept` changes.
fn damage_warning(journal: &Path, line: usize, why: &str, kept: usize, aside: &Path) -> String {
    format!(
        "{} line {line}, the last, is damaged ({why}), as a crash while writing leaves it; its \
         change was never acknowledged; kept the {} before it; the original file is kept aside \
         as {}",
        journal.display(),
        plural(kept, "change", "changes"),
        aside.display()
    )
}

/// The rule store. See the [module docs](self) for its files and guarantees.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Holds the directory lock; used to fsync the directory.
    dir_handle: File,
    journal_path: PathBuf,
    journal: File,
    /// Length of the journal's committed lines.
    journal_len: u64,
    /// A failed append may have left bytes past `journal_len`.
    tail_dirty: bool,
    book: Book,
    /// Changes committed since the last snapshot.
    since_snapshot: usize,
    /// Changes replayed from the journal at open (the rest came from the snapshot).
    #[cfg(test)]
    replayed: usize,
    /// Test hook: the next append writes this many bytes, then fails.
    #[cfg(test)]
    fail_next_append: Option<usize>,
}

impl Store {
    /// Opens the store in `dir`, creating the directory (mode 0700) and an empty store if
    /// missing. Recovers from damaged files as the [module docs](self) describe; the returned
    /// strings are warnings for humans about what was recovered and where the originals are.
    pub fn open(dir: &Path) -> Result<(Store, Vec<String>), StoreError> {
        let mut warnings: Vec<String> = files::prepare_dir(dir)?.into_iter().collect();
        let dir_handle = files::lock_dir(dir)?;
        let (store, more) = Self::open_locked(dir, dir_handle)?;
        warnings.extend(more);
        Ok((store, warnings))
    }

    /// [`Store::open`] with the directory already locked through `dir_handle`.
    fn open_locked(dir: &Path, dir_handle: File) -> Result<(Store, Vec<String>), StoreError> {
        let mut warnings = Vec::new();
        let journal_path = dir.join(JOURNAL);
        let snapshot_path = dir.join(SNAPSHOT);
        let (snapshot, snapshot_damage, snapshot_missing) = match read_snapshot(&snapshot_path)? {
            SnapshotLoad::Loaded(s) => (Some(s), None, false),
            SnapshotLoad::Missing => (None, None, true),
            SnapshotLoad::Damaged(why) => (None, Some(why), false),
        };
        let snapshot_last = snapshot.as_ref().map(|s| s.last_change);
        let scan = scan_journal(&journal_path)?;
        if !scan.exists
            && let Some(last) = snapshot_last
            && last > 0
        {
            return Err(StoreError::Unusable {
                path: journal_path,
                why: format!(
                    "it is missing, but {} includes changes up to {last}; restore the journal, \
                     or move the snapshot away to start an empty store",
                    snapshot_path.display(),
                ),
            });
        }
        let replay = recovery::replay(snapshot, &scan, &BTreeSet::new());
        // Decide before touching any file: a refused store is left exactly as it was.
        if let Some(damaged) = recovery::refusal(&journal_path, &scan, &replay) {
            return Err(StoreError::Damaged(Box::new(damaged)));
        }

        // Left by a crash while replacing a file: the original is intact.
        files::remove_if_present(&dir.join(format!("{SNAPSHOT}.tmp")))?;
        files::remove_if_present(&dir.join(format!("{JOURNAL}.tmp")))?;
        if let Some(why) = snapshot_damage {
            let aside = files::set_aside(dir, &dir_handle, SNAPSHOT)?;
            warnings.push(format!(
                "{} is damaged ({why}); kept it aside as {} and rebuilt the state from the \
                 journal",
                snapshot_path.display(),
                aside.display()
            ));
        } else if let Some(last) = snapshot_last
            && !replay.snapshot_used
        {
            let aside = files::set_aside(dir, &dir_handle, SNAPSHOT)?;
            warnings.push(format!(
                "{} ends at change {last}, which the journal does not have; kept the snapshot \
                 aside as {} and rebuilt the state from the journal",
                snapshot_path.display(),
                aside.display()
            ));
        } else if snapshot_missing && !scan.lines.is_empty() {
            warnings.push(format!(
                "{} is missing; rebuilt the state from the journal",
                snapshot_path.display()
            ));
        }
        let recovery::Replay {
            book,
            kept_len,
            replayed,
            snapshot_used,
            fault,
            ..
        } = replay;
        // What is left is a last line cut short by a crash: its change was never acknowledged.
        if let Some(f) = fault {
            let aside = files::set_aside(dir, &dir_handle, JOURNAL)?;
            files::replace_with_prefix(dir, &dir_handle, JOURNAL, &aside, kept_len)?;
            warnings.push(damage_warning(
                &journal_path,
                f.line,
                &f.why,
                book.changes.len(),
                &aside,
            ));
        }

        let journal = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&journal_path)
            .map_err(io_err(&journal_path))?;
        if !scan.exists {
            dir_handle.sync_all().map_err(io_err(dir))?;
        }
        let journal_len = journal.metadata().map_err(io_err(&journal_path))?.len();
        let mut store = Store {
            dir: dir.to_owned(),
            dir_handle,
            journal_path,
            journal,
            journal_len,
            tail_dirty: false,
            book,
            since_snapshot: replayed,
            #[cfg(test)]
            replayed,
            #[cfg(test)]
            fail_next_append: None,
        };
        if !snapshot_used || replayed >= SNAPSHOT_EVERY {
            store.snapshot()?;
        }
        Ok((store, warnings))
    }

    /// The current rules, allow entries and mode.
    pub fn state(&self) -> &State {
        &self.book.state
    }

    /// The first rule id never used: ids are not reused, even after the rule is removed.
    pub fn next_rule_id(&self) -> u64 {
        self.book.next_rule_id
    }

    /// Commits `ops` as one change: checks all of them against the state in order (nothing is
    /// applied if one does not apply; an empty list is [`StoreError::Empty`]), appends one
    /// journal line and syncs it, then applies them. If the write fails, the state is unchanged.
    ///
    /// `undoes` marks the change as an undo of an earlier change (usually with ops from
    /// [`Store::undo_ops`]); only an undo may add a rule under an id used before.
    pub fn commit(
        &mut self,
        actor: &str,
        reason: Option<&str>,
        ops: Vec<Op>,
        undoes: Option<u64>,
    ) -> Result<Change, StoreError> {
        self.commit_at(SystemTime::now(), actor, reason, ops, undoes)
    }

    fn commit_at(
        &mut self,
        at: SystemTime,
        actor: &str,
        reason: Option<&str>,
        ops: Vec<Op>,
        undoes: Option<u64>,
    ) -> Result<Change, StoreError> {
        self.book.check(&ops, undoes)?;
        let change = Change {
            id: self.book.next_change_id,
            at,
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
            ops,
            undoes,
        };
        let body =
            serde_json::to_string(&change).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut line = codec::frame("change", &body);
        line.push('\n');
        self.append(line.as_bytes())?;
        self.book.apply(change.clone());
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY
            && let Err(e) = self.snapshot()
        {
            // The change is durable in the journal; the next commit tries again.
            tracing::warn!("taking a rule store snapshot failed: {e}");
        }
        Ok(change)
    }

    fn append(&mut self, line: &[u8]) -> Result<(), StoreError> {
        if self.tail_dirty {
            self.repair_tail()?;
        }
        match self.write_line(line) {
            Ok(()) => {
                self.journal_len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the line got written, so the next line starts clean.
                self.tail_dirty = true;
                let _ = self.repair_tail();
                Err(io_err(&self.journal_path)(e))
            }
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_next_append.take() {
            self.journal.write_all(line.get(..n).unwrap_or(line))?;
            return Err(io::Error::other("injected write failure"));
        }
        self.journal.write_all(line)?;
        self.journal.sync_data()
    }

    fn repair_tail(&mut self) -> Result<(), StoreError> {
        self.journal
            .set_len(self.journal_len)
            .and_then(|()| self.journal.sync_data())
            .map_err(io_err(&self.journal_path))?;
        self.tail_dirty = false;
        Ok(())
    }

    /// Every change since the store was created, oldest first.
    pub fn changes(&self) -> &[Change] {
        &self.book.changes
    }

    /// The change with id `id`.
    pub fn change(&self, id: u64) -> Option<&Change> {
        self.book.change(id)
    }

    /// The latest change that undid change `id`, if any.
    pub fn undone_by(&self, id: u64) -> Option<u64> {
        self.book.undone_by.get(&id).copied()
    }

    /// The ops that undo change `id`, to commit with `undoes: Some(id)`: each op's inverse, in
    /// reverse order, leaving out those that no longer apply (a rule it added that is gone since,
    /// a rule it removed whose id is back, an allow entry or mode changed since). Undoing an undo
    /// redoes the original.
    ///
    /// [`StoreError::NothingToUndo`] if nothing applies, [`StoreError::NoSuchChange`] for an
    /// unknown id.
    pub fn undo_ops(&self, id: u64) -> Result<Vec<Op>, StoreError> {
        let change = self.change(id).ok_or(StoreError::NoSuchChange { id })?;
        if let Some(Op::Repair { original, .. }) = change.ops.first()
            && change.ops.len() == 1
        {
            return Err(StoreError::NothingToUndo {
                id,
                why: format!(
                    "it repaired the journal, which cannot be undone; the journal as it was is \
                     kept as {original}"
                ),
            });
        }
        let inverse: Vec<Op> = change
            .ops
            .iter()
            .rev()
            .filter(|op| !matches!(op, Op::Repair { .. }))
            .map(Op::inverse)
            .collect();
        let mut draft = Draft::new(&self.book.state);
        let mut skipped = Vec::new();
        let keep: Vec<bool> = inverse
            .iter()
            .map(|op| match draft.apply(op) {
                Ok(()) => true,
                Err(why) => {
                    skipped.push(why);
                    false
                }
            })
            .collect();
        drop(draft);
        if !keep.contains(&true) {
            let undone = self.undone_by(id).filter(|&u| self.undone_by(u).is_none());
            let mut why = match undone {
                Some(u) => format!("it was undone by change {u}; "),
                None => String::new(),
            };
            why.push_str(skipped.first().map_or("", String::as_str));
            if skipped.len() > 1 {
                why.push_str(&format!(" (and {} more)", skipped.len() - 1));
            }
            return Err(StoreError::NothingToUndo { id, why });
        }
        Ok(inverse
            .into_iter()
            .zip(keep)
            .filter_map(|(op, k)| k.then_some(op))
            .collect())
    }

    /// Removes every rule with `expires_at <= now` in one change (actor `swarmwall`, reason
    /// `expired`, time `now`); `None` if no rule has expired.
    pub fn expire(&mut self, now: SystemTime) -> Result<Option<Change>, StoreError> {
        let ops: Vec<Op> = self
            .book
            .state
            .rules
            .values()
            .filter(|r| r.expires_at.is_some_and(|t| t <= now))
            .map(|r| Op::RemoveRule(r.clone()))
            .collect();
        if ops.is_empty() {
            return Ok(None);
        }
        self.commit_at(now, SELF_ACTOR, Some("expired"), ops, None)
            .map(Some)
    }

    /// Writes the state to `snapshot.json` atomically, so the next open replays only the
    /// journal lines after it. [`Store::commit`] calls this every 1000 changes.
    pub fn snapshot(&mut self) -> Result<(), StoreError> {
        let state = &self.book.state;
        let body = SnapshotOut {
            format: SNAPSHOT_FORMAT,
            last_change: self.book.changes.last().map_or(0, |c| c.id),
            next_change_id: self.book.next_change_id,
            next_rule_id: self.book.next_rule_id,
            mode: state.mode,
            rules: state.rules.values().collect(),
            allow: state.allow.values().collect(),
        };
        let body = serde_json::to_string(&body).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut text = codec::frame("snapshot", &body);
        text.push('\n');
        files::write_atomic(&self.dir, &self.dir_handle, SNAPSHOT, text.as_bytes())?;
        self.since_snapshot = 0;
        Ok(())
    }

    /// A one-line description of `change` for humans, e.g. `add 1 rule: drop 192.0.2.7 (scope
    /// any, ttl 1h)`, `add 10000 rules`, `remove rule 5 (drop 192.0.2.7)`, `allow 10.0.0.0/8`,
    /// `mode enforce -> observe`, `undo change 12: remove 3 rules`.
    pub fn summary(change: &Change) -> String {
        let count = |f: fn(&Op) -> bool| change.ops.iter().filter(|op| f(op)).count();
        // A rule removed and added back under its id in one change was updated (see the
        // module docs): it is neither an addition nor a removal.
        let removed: std::collections::HashSet<u64> = change
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::RemoveRule(r) => Some(r.id),
                _ => None,
            })
            .collect();
        let updated: Vec<&RuleRecord> = change
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddRule(r) if removed.contains(&r.id) => Some(r),
                _ => None,
            })
            .collect();
        let is_update = |r: &RuleRecord| updated.iter().any(|u| u.id == r.id);
        let added: Vec<&RuleRecord> = change
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddRule(r) if !is_update(r) => Some(r),
                _ => None,
            })
            .collect();
        let gone: Vec<&RuleRecord> = change
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::RemoveRule(r) if !is_update(r) => Some(r),
                _ => None,
            })
            .collect();
        let life = |r: &RuleRecord| match r.expires_at.map(|t| t.duration_since(change.at)) {
            None => "permanent".to_owned(),
            Some(Ok(ttl)) => format!(
                "ttl {}",
                humantime::format_duration(Duration::from_secs(ttl.as_secs()))
            ),
            Some(Err(_)) => "expired".to_owned(),
        };
        let mut parts = Vec::new();
        match added.as_slice() {
            [] => {}
            [r] => {
                let life = match r.expires_at.map(|t| t.duration_since(r.created_at)) {
                    None => "permanent".to_owned(),
                    Some(Ok(ttl)) => format!(
                        "ttl {}",
                        humantime::format_duration(Duration::from_secs(ttl.as_secs()))
                    ),
                    Some(Err(_)) => "expired".to_owned(),
                };
                parts.push(format!(
                    "add 1 rule: {} {} (scope {}, {life})",
                    r.action, r.target, r.scope
                ));
            }
            many => parts.push(format!("add {} rules", many.len())),
        }
        match updated.as_slice() {
            [] => {}
            [r] => parts.push(format!(
                "update rule {}: {} {} (scope {}, now {})",
                r.id,
                r.action,
                r.target,
                r.scope,
                life(r)
            )),
            many => parts.push(format!("update {} rules", many.len())),
        }
        match gone.as_slice() {
            [] => {}
            [r] => parts.push(format!("remove rule {} ({} {})", r.id, r.action, r.target)),
            many => parts.push(format!("remove {} rules", many.len())),
        }
        match count(|op| matches!(op, Op::AddAllow(_))) {
            0 => {}
            1 => {
                if let Some(Op::AddAllow(a)) =
                    change.ops.iter().find(|op| matches!(op, Op::AddAllow(_)))
                {
                    parts.push(format!("allow {}", a.target));
                }
            }
            n => parts.push(format!("add {n} allow entries")),
        }
        match count(|op| matches!(op, Op::RemoveAllow(_))) {
            0 => {}
            1 => {
                if let Some(Op::RemoveAllow(a)) = change
                    .ops
                    .iter()
                    .find(|op| matches!(op, Op::RemoveAllow(_)))
                {
                    parts.push(format!("remove allow entry {}", a.target));
                }
            }
            n => parts.push(format!("remove {n} allow entries")),
        }
        for op in &change.ops {
            match op {
                Op::SetMode { from, to } => parts.push(format!(
                    "mode {} -> {}",
                    codec::mode_text(*from),
                    codec::mode_text(*to)
                )),
                Op::Repair { what, .. } => parts.push(format!("journal repair: {what}")),
                _ => {}
            }
        }
        let body = parts.join("; ");
        match change.undoes {
            Some(id) => format!("undo change {id}: {body}"),
            None => body,
        }
    }
}
