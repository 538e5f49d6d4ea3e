//! Reading the store's files back, and deciding what a damaged journal allows.
//!
//! A crash while appending can only cut the **last** line short (every line is fsync'd before
//! the next is written, and JSON lines hold no raw newline), so a damaged last line is dropped
//! with a warning. Damage anywhere else — a flipped byte on line 10 of 53, a line that no longer
//! applies, a journal shorter than its snapshot — is not a crash artefact: cutting the journal
//! there would silently remove every rule the later lines made. [`Store::open`](super::Store::open)
//! refuses such a store with [`Damaged`], touching no file, and [`repair`] is the explicit way
//! out: drop the damaged line(s) and keep what follows, or keep only the valid prefix. Either
//! keeps a copy of the journal as it was and records itself in the journal.

use std::{
    collections::BTreeSet,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{
    Book, Change, JOURNAL, Op, SNAPSHOT, Snapshot, SnapshotLoad, Store, StoreError, codec,
    files::{self, io_err},
    plural, read_snapshot,
};

/// One line of the journal as read.
pub(super) struct Line {
    /// Byte offset of the line's first byte.
    pub start: u64,
    /// Byte offset just past the line (its newline included).
    pub end: u64,
    /// The change, or what is wrong with the line.
    pub parsed: Result<Change, String>,
}

/// The whole journal, line by line.
pub(super) struct Scan {
    /// The file exists.
    pub exists: bool,
    /// Every line, a cut last line included.
    pub lines: Vec<Line>,
}

impl Scan {
    /// The changes of the lines that parsed, in order.
    #[cfg(test)]
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.lines.iter().filter_map(|l| l.parsed.as_ref().ok())
    }
}

/// Reads every line of the journal at `path`; [`replay`] checks that ids increase.
pub(super) fn scan_journal(path: &Path) -> Result<Scan, StoreError> {
    let mut scan = Scan {
        exists: true,
        lines: Vec::new(),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            scan.exists = false;
            return Ok(scan);
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        scan.lines.push(Line {
            start: offset,
            end: offset + n as u64,
            parsed: parse_line(&buf, 0),
        });
        offset += n as u64;
    }
    Ok(scan)
}

/// Parses one journal line (with its newline); `prev_id` is the id of the last good line.
pub(super) fn parse_line(bytes: &[u8], prev_id: u64) -> Result<Change, String> {
    let line = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| "cut short: no end of line".to_owned())?;
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let body = codec::unframe("change", text)?;
    let change: Change = serde_json::from_str(body).map_err(|e| format!("not a change: {e}"))?;
    if change.id <= prev_id {
        return Err(format!(
            "change id {} does not follow change {prev_id}",
            change.id
        ));
    }
    if change.ops.is_empty() {
        return Err(format!("change {} has no operations", change.id));
    }
    Ok(change)
}

/// The first line that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fault {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
    /// The line is unreadable (cut, not JSON, bad checksum), as a crash can leave it; false for
    /// a well-formed change that does not fit the history.
    pub unreadable: bool,
}

/// The journal replayed onto the snapshot (or onto nothing), up to its first fault.
pub(super) struct Replay {
    pub book: Book,
    /// Bytes of the file up to the end of the last line used.
    pub kept_len: u64,
    /// Lines used (skipped lines not counted).
    pub kept_lines: usize,
    /// Changes applied on top of the snapshot.
    pub replayed: usize,
    /// The snapshot was the starting point.
    pub snapshot_used: bool,
    /// The snapshot includes changes the journal's valid part lacks: `(its last change, the last
    /// change of the valid part)`.
    pub snapshot_ahead: Option<(u64, u64)>,
    pub fault: Option<Fault>,
}

/// A line's change, or what is wrong and whether the line itself is unreadable (else it is out
/// of order).
type Reparsed = Result<Change, (String, bool)>;

/// Replays `scan` (leaving out the 1-based line numbers in `skip`) onto `snapshot`.
pub(super) fn replay(snapshot: Option<Snapshot>, scan: &Scan, skip: &BTreeSet<usize>) -> Replay {
    let used: Vec<(usize, &Line)> = scan
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(n, _)| !skip.contains(n))
        .collect();
    // Ids must increase along the lines used (a dropped line no longer counts).
    let reparsed: Vec<(usize, &Line, Reparsed)> = {
        let mut prev_id = 0;
        used.iter()
            .map(|(n, l)| {
                let parsed = match &l.parsed {
                    Ok(c) if c.id <= prev_id => Err((
                        format!("change id {} does not follow change {prev_id}", c.id),
                        false,
                    )),
                    Ok(c) => {
                        prev_id = c.id;
                        Ok(c.clone())
                    }
                    Err(why) => Err((why.clone(), true)),
                };
                (*n, *l, parsed)
            })
            .collect()
    };
    let valid: Vec<&Change> = reparsed
        .iter()
        .map_while(|(_, _, p)| p.as_ref().ok())
        .collect();

    let mut book = Book::new();
    let mut start = 0;
    let mut snapshot_used = false;
    let mut snapshot_ahead = None;
    let mut high_water = (1, 1);
    if let Some(s) = snapshot {
        let found = if s.last_change == 0 {
            Some(0)
        } else {
            valid
                .iter()
                .position(|c| c.id == s.last_change)
                .map(|i| i + 1)
        };
        high_water = (s.next_rule_id, s.next_change_id);
        match found {
            Some(i) => {
                start = i;
                snapshot_used = true;
                book.state = s.state;
                book.next_rule_id = s.next_rule_id;
                book.next_change_id = s.next_change_id;
            }
            None => {
                let last = valid.last().map_or(0, |c| c.id);
                if s.last_change > last {
                    snapshot_ahead = Some((s.last_change, last));
                }
            }
        }
    }

    let mut fault = None;
    let (mut kept_len, mut kept_lines, mut replayed) = (0, 0, 0);
    for (i, (n, line, parsed)) in reparsed.into_iter().enumerate() {
        let change = match parsed {
            Ok(c) => c,
            Err((why, unreadable)) => {
                fault = Some(Fault {
                    line: n,
                    why,
                    unreadable,
                });
                break;
            }
        };
        if i < start {
            book.record(change);
        } else {
            let fits = if change.id < book.next_change_id {
                Err(format!(
                    "change id {} is below the next change id {}",
                    change.id, book.next_change_id
                ))
            } else {
                book.check(&change.ops, change.undoes)
                    .map_err(|e| format!("change {} does not apply: {e}", change.id))
            };
            if let Err(why) = fits {
                fault = Some(Fault {
                    line: n,
                    why,
                    unreadable: false,
                });
                break;
            }
            book.apply(change);
            replayed += 1;
        }
        kept_len = line.end;
        kept_lines += 1;
    }
    // Ids a snapshot handed out stay used, even when it is not the starting point.
    book.next_rule_id = book.next_rule_id.max(high_water.0);
    book.next_change_id = book.next_change_id.max(high_water.1);
    Replay {
        book,
        kept_len,
        kept_lines,
        replayed,
        snapshot_used,
        snapshot_ahead,
        fault,
    }
}

/// Why [`Store::open`](super::Store::open) refused a store whose journal is damaged where a
/// crash cannot have damaged it. Nothing was changed; [`repair`] is the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// The journal.
    pub journal: PathBuf,
    /// Lines in it.
    pub lines: usize,
    /// The first damaged line (1-based), 0 when the journal itself is whole but the snapshot
    /// includes changes it lacks.
    pub line: usize,
    /// What is wrong.
    pub why: String,
    /// Lines after the damaged one that are intact.
    pub intact_after: usize,
    /// Rules in force with only the damaged line dropped that keeping the valid prefix would
    /// remove.
    pub rules_at_stake: usize,
    /// What `repair --drop-line LINE` would do: `Ok(changes kept after it)` or why it would not
    /// work (a later line would no longer apply).
    pub drop_line: Result<usize, String>,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = self.journal.display();
        if self.line == 0 {
            write!(
                f,
                "the rule journal {j} is shorter than its snapshot: {}. Nothing was changed; the \
                 data plane keeps enforcing the rules it has. Restore the journal from a backup, \
                 or accept it as it is with `swarmwall rules repair --keep-valid-prefix --yes` \
                 (the snapshot is kept aside)",
                self.why
            )?;
            return Ok(());
        }
        write!(
            f,
            "the rule journal {j} is damaged at line {} of {} ({}); {} {} it, so this is not a \
             line cut short by a crash. Nothing was changed, and the data plane keeps \
             enforcing the rules it has. Cutting the journal at that line would remove {} in \
             force. To go on: ",
            self.line,
            self.lines,
            self.why,
            plural(self.intact_after, "intact line", "intact lines"),
            if self.intact_after == 1 {
                "follows"
            } else {
                "follow"
            },
            plural(self.rules_at_stake, "rule", "rules"),
        )?;
        match &self.drop_line {
            Ok(kept) => write!(
                f,
                "`swarmwall rules repair --drop-line {}` drops only that line and keeps the {} \
                 after it; ",
                self.line,
                plural(*kept, "change", "changes")
            )?,
            Err(why) => write!(f, "dropping only that line would not do ({why}); ",)?,
        }
        let prefix = match self.line - 1 {
            0 => "empties it".to_owned(),
            1 => "keeps line 1 only".to_owned(),
            n => format!("keeps lines 1 to {n} only"),
        };
        write!(
            f,
            "`swarmwall rules repair --keep-valid-prefix --yes` {prefix}. Both keep a copy of the \
             journal as it is now and record the repair; `swarmwall rules repair` alone shows \
             this again"
        )
    }
}

/// What a scan found and what each way out would do, for `swarmwall rules repair`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The journal.
    pub journal: PathBuf,
    /// Lines in it.
    pub lines: usize,
    /// Changes that replay.
    pub valid_changes: usize,
    /// Rules in force after them.
    pub rules: usize,
    /// The first fault, if any: line (1-based), what is wrong, and whether a crash can have
    /// caused it (an unreadable last line, which opening the store drops by itself).
    pub fault: Option<(usize, String, bool)>,
    /// The refusal that opening would give, if it refuses.
    pub refusal: Option<Damaged>,
}

/// How [`repair`] mends a journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Only look.
    Diagnose,
    /// Drop these lines (1-based) and keep every other; what is left must replay.
    DropLines(BTreeSet<usize>),
    /// Keep the lines before the first fault and drop the rest (the snapshot is set aside).
    KeepValidPrefix,
}

/// What [`repair`] did.
#[derive(Debug)]
pub struct RepairOutcome {
    /// The journal's state before (and, for a diagnosis, now).
    pub before: Diagnosis,
    /// Where the original journal was kept, when it was changed.
    pub original: Option<PathBuf>,
    /// The change that records the repair.
    pub change: Option<Change>,
    /// Rules in force after the repair.
    pub rules: usize,
}

/// Reads the store in `dir` the way [`Store::open`](super::Store::open) does, without changing
/// any file: what replays, and whether opening would refuse.
fn diagnose_locked(dir: &Path) -> Result<(Scan, Diagnosis), StoreError> {
    let journal = dir.join(JOURNAL);
    let snapshot = match read_snapshot(&dir.join(SNAPSHOT))? {
        SnapshotLoad::Loaded(s) => Some(s),
        _ => None,
    };
    let scan = scan_journal(&journal)?;
    let r = replay(snapshot, &scan, &BTreeSet::new());
    let refusal = refusal(&journal, &scan, &r);
    let diagnosis = Diagnosis {
        journal,
        lines: scan.lines.len(),
        valid_changes: r.book.changes.len(),
        rules: r.book.state.rules.len(),
        fault: r
            .fault
            .as_ref()
            .map(|f| (f.line, f.why.clone(), is_torn_tail(f, &scan))),
        refusal,
    };
    Ok((scan, diagnosis))
}

/// A fault a crash can leave: the last line, unreadable.
fn is_torn_tail(f: &Fault, scan: &Scan) -> bool {
    f.unreadable && f.line == scan.lines.len()
}

/// Whether a replay must be refused rather than recovered, and what to say.
pub(super) fn refusal(journal: &Path, scan: &Scan, r: &Replay) -> Option<Damaged> {
    if let Some(f) = &r.fault
        && !is_torn_tail(f, scan)
    {
        let intact_after = scan
            .lines
            .iter()
            .skip(f.line)
            .filter(|l| l.parsed.is_ok())
            .count();
        let dropped = replay(None, scan, &BTreeSet::from([f.line]));
        let drop_line = match &dropped.fault {
            None => Ok(dropped.kept_lines.saturating_sub(f.line - 1)),
            Some(g) if is_torn_tail(g, scan) => Ok(dropped.kept_lines.saturating_sub(f.line - 1)),
            Some(g) => Err(format!("line {} would then be damaged: {}", g.line, g.why)),
        };
        let rules_at_stake = dropped
            .book
            .state
            .rules
            .keys()
            .filter(|id| !r.book.state.rules.contains_key(id))
            .count();
        return Some(Damaged {
            journal: journal.to_owned(),
            lines: scan.lines.len(),
            line: f.line,
            why: f.why.clone(),
            intact_after,
            rules_at_stake,
            drop_line,
        });
    }
    r.snapshot_ahead.map(|(snap, last)| Damaged {
        journal: journal.to_owned(),
        lines: scan.lines.len(),
        line: 0,
        why: format!(
            "the snapshot includes changes up to {snap}, the journal's valid part ends at change \
             {last}"
        ),
        intact_after: 0,
        rules_at_stake: 0,
        drop_line: Err("no line is damaged".into()),
    })
}

/// Mends (or, with [`Repair::Diagnose`], only examines) the store in `dir`, which no daemon may
/// have open ([`StoreError::Locked`] otherwise). A change is recorded in the journal by `actor`,
/// and the journal as it was is kept aside.
pub fn repair(dir: &Path, how: &Repair, actor: &str) -> Result<RepairOutcome, StoreError> {
    let dir_handle = files::lock_dir(dir)?;
    let (scan, before) = diagnose_locked(dir)?;
    let journal = dir.join(JOURNAL);
    let (skip, what) = match how {
        Repair::Diagnose => {
            let rules = before.rules;
            return Ok(RepairOutcome {
                before,
                original: None,
                change: None,
                rules,
            });
        }
        Repair::DropLines(lines) => {
            if lines.is_empty() {
                return Err(StoreError::Invalid("no line to drop".into()));
            }
            if let Some(n) = lines.iter().find(|&&n| n == 0 || n > scan.lines.len()) {
                return Err(StoreError::Invalid(format!(
                    "line {n}: the journal has lines 1 to {}",
                    scan.lines.len()
                )));
            }
            let r = replay(None, &scan, lines);
            if let Some(f) = r.fault.as_ref().filter(|f| !is_torn_tail(f, &scan)) {
                return Err(StoreError::Invalid(format!(
                    "with {} dropped, line {} is damaged ({}); drop it too, or keep the valid \
                     prefix",
                    list_lines(lines),
                    f.line,
                    f.why
                )));
            }
            let mut skip = lines.clone();
            if let Some(f) = &r.fault {
                skip.insert(f.line);
            }
            let what = format!(
                "dropped {} of {JOURNAL}{}",
                list_lines(&skip),
                describe_faults(&scan, &skip)
            );
            (skip, what)
        }
        Repair::KeepValidPrefix => {
            let first_bad = before.fault.as_ref().map(|f| f.0);
            if first_bad.is_none() && before.refusal.is_none() {
                return Err(StoreError::Invalid(format!(
                    "{} has no damage to repair",
                    journal.display()
                )));
            }
            let from = first_bad.unwrap_or(scan.lines.len() + 1);
            let skip: BTreeSet<usize> = (from..=scan.lines.len()).collect();
            let what = if skip.is_empty() {
                format!(
                    "kept all {} of {JOURNAL}; set the snapshot aside",
                    plural(scan.lines.len(), "line", "lines")
                )
            } else {
                format!(
                    "kept lines 1 to {} of {JOURNAL} and dropped the {} from line {from} on{}",
                    from - 1,
                    plural(skip.len(), "line", "lines"),
                    describe_faults(&scan, &BTreeSet::from([from]))
                )
            };
            (skip, what)
        }
    };

    // Ids handed out before stay used: the snapshot's marks, and those of every line read.
    let mut marks = match read_snapshot(&dir.join(SNAPSHOT))? {
        SnapshotLoad::Loaded(s) => (s.next_rule_id, s.next_change_id),
        _ => (1, 1),
    };
    for c in scan.lines.iter().filter_map(|l| l.parsed.as_ref().ok()) {
        marks.1 = marks.1.max(c.id.saturating_add(1));
        for op in &c.ops {
            if let Op::AddRule(r) = op {
                marks.0 = marks.0.max(r.id.saturating_add(1));
            }
        }
    }
    let original = files::set_aside(dir, &dir_handle, JOURNAL)?;
    let mut kept = Vec::new();
    let mut src = File::open(&original).map_err(io_err(&original))?;
    for (i, line) in scan.lines.iter().enumerate() {
        if skip.contains(&(i + 1)) {
            continue;
        }
        src.seek(SeekFrom::Start(line.start))
            .map_err(io_err(&original))?;
        let mut bytes = vec![0; (line.end - line.start) as usize];
        src.read_exact(&mut bytes).map_err(io_err(&original))?;
        kept.extend_from_slice(&bytes);
    }
    files::write_atomic(dir, &dir_handle, JOURNAL, &kept)?;
    // The snapshot may hold the effect of a dropped line: rebuild it from the journal.
    if dir.join(SNAPSHOT).exists() {
        files::set_aside(dir, &dir_handle, SNAPSHOT)?;
        files::remove_if_present(&dir.join(SNAPSHOT))?;
    }
    let (mut store, _) = Store::open_locked(dir, dir_handle)?;
    store.book.next_change_id = store.book.next_change_id.max(marks.1);
    let change = store.commit(
        actor,
        Some(&format!("journal repair: {what}")),
        vec![Op::Repair {
            what,
            original: original.display().to_string(),
            next_rule_id: marks.0,
        }],
        None,
    )?;
    Ok(RepairOutcome {
        before,
        original: Some(original),
        change: Some(change),
        rules: store.state().rules.len(),
    })
}

fn list_lines(lines: &BTreeSet<usize>) -> String {
    let v: Vec<String> = lines.iter().map(|n| n.to_string()).collect();
    match v.len() {
        1 => format!("line {}", v[0]),
        _ => format!("lines {}", v.join(", ")),
    }
}

/// ` (line 10: checksum mismatch; …)` for the damaged ones among `lines`.
fn describe_faults(scan: &Scan, lines: &BTreeSet<usize>) -> String {
    let v: Vec<String> = lines
        .iter()
        .filter_map(|&n| {
            let why = scan.lines.get(n - 1)?.parsed.as_ref().err()?;
            Some(format!("line {n}: {why}"))
        })
        .collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.join("; "))
    }
}
