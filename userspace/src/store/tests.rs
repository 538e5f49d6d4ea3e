use std::{
    fs,
    time::{Duration, UNIX_EPOCH},
};

use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

use super::*;
use crate::Proto;
use std::collections::BTreeSet;

/// A fixed time with nanoseconds, so round trips are checked to the nanosecond.
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000 + secs, 123_456_789)
}

fn target(s: &str) -> Target {
    s.parse().unwrap()
}

fn rule(id: u64, tgt: &str) -> RuleRecord {
    RuleRecord {
        id,
        target: target(tgt),
        action: Action::Drop,
        scope: Scope::default(),
        expires_at: None,
        created_at: t(0),
        actor: "admin".into(),
        reason: None,
    }
}

fn allow(tgt: &str) -> AllowRecord {
    AllowRecord {
        target: target(tgt),
        created_at: t(1),
        actor: "admin".into(),
        reason: Some("office".into()),
    }
}

/// Opens a store that must need no recovery.
fn open(dir: &Path) -> Store {
    let (store, warnings) = Store::open(dir).unwrap();
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    store
}

fn open_warned(dir: &Path) -> (Store, Vec<String>) {
    let (store, warnings) = Store::open(dir).unwrap();
    assert!(!warnings.is_empty(), "expected warnings");
    (store, warnings)
}

fn add(store: &mut Store, tgt: &str) -> Change {
    let id = store.next_rule_id();
    store
        .commit("admin", None, vec![Op::AddRule(rule(id, tgt))], None)
        .unwrap()
}

fn journal(dir: &Path) -> Vec<u8> {
    fs::read(dir.join(JOURNAL)).unwrap()
}

fn journal_lines(dir: &Path) -> usize {
    journal(dir).iter().filter(|&&b| b == b'\n').count()
}

fn damaged_copies(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.damaged-");
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    v.sort();
    v
}

/// Everything a reopen must reproduce.
#[derive(Debug, PartialEq)]
struct Image {
    state: State,
    changes: Vec<Change>,
    next_rule_id: u64,
    undone_by: Vec<(u64, Option<u64>)>,
}

fn image(s: &Store) -> Image {
    Image {
        state: s.state().clone(),
        changes: s.changes().to_vec(),
        next_rule_id: s.next_rule_id(),
        undone_by: s
            .changes()
            .iter()
            .map(|c| (c.id, s.undone_by(c.id)))
            .collect(),
    }
}

fn reopen(dir: &Path, store: Store) -> Store {
    let before = image(&store);
    drop(store);
    let store = open(dir);
    assert_eq!(image(&store), before);
    store
}

#[test]
fn commit_and_reopen_round_trip() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let mut s = open(&dir);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut scoped = rule(1, "198.51.100.0/24");
    scoped.action = Action::Observe;
    scoped.scope = Scope {
        dst: Some("203.0.113.5".parse().unwrap()),
        proto: Some(Proto::Tcp),
        port: Some(443),
    };
    scoped.expires_at = Some(t(3600));
    scoped.reason = Some("scan \"burst\"\nline two".into());
    let c1 = s
        .commit(
            "admin",
            Some("why"),
            vec![
                Op::AddRule(scoped.clone()),
                Op::AddRule(rule(2, "2001:db8::1")),
            ],
            None,
        )
        .unwrap();
    assert_eq!(c1.id, 1);
    assert_eq!(c1.reason.as_deref(), Some("why"));
    s.commit("admin", None, vec![Op::AddAllow(allow("10.0.0.0/8"))], None)
        .unwrap();
    s.commit(
        "ops",
        None,
        vec![Op::SetMode {
            from: Mode::Enforce,
            to: Mode::Observe,
        }],
        None,
    )
    .unwrap();
    let c4 = s
        .commit(
            "admin",
            None,
            vec![Op::RemoveRule(rule(2, "2001:db8::1"))],
            None,
        )
        .unwrap();
    let undo = s.undo_ops(c4.id).unwrap();
    assert_eq!(undo, vec![Op::AddRule(rule(2, "2001:db8::1"))]);
    let c5 = s.commit("admin", None, undo, Some(c4.id)).unwrap();
    assert_eq!(s.undone_by(c4.id), Some(c5.id));
    assert_eq!(s.undone_by(c5.id), None);

    let s = reopen(&dir, s);
    assert_eq!(s.state().rules.get(&1), Some(&scoped));
    assert_eq!(s.state().mode, Mode::Observe);
    assert_eq!(s.state().allow.len(), 1);
    assert_eq!(s.changes().len(), 5);
    assert_eq!(s.next_rule_id(), 3);
    assert_eq!(s.change(5).unwrap().undoes, Some(4));
    assert!(s.change(6).is_none());
    assert_eq!(journal_lines(&dir), 5);

    // The on-disk form is readable: strings for targets, actions, protocols and modes.
    let text = String::from_utf8(journal(&dir)).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("{\"crc\":"), "{first}");
    for needle in [
        "\"target\":\"198.51.100.0/24\"",
        "\"action\":\"observe\"",
        "\"proto\":\"tcp\"",
        "\"op\":\"add_rule\"",
    ] {
        assert!(first.contains(needle), "{needle} not in {first}");
    }
    assert!(text.contains("\"from\":\"enforce\",\"to\":\"observe\""));
}

#[test]
fn rule_ids_are_never_reused() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    add(&mut s, "192.0.2.2");
    s.commit(
        "admin",
        None,
        vec![Op::RemoveRule(rule(2, "192.0.2.2"))],
        None,
    )
    .unwrap();
    s.commit(
        "admin",
        None,
        vec![Op::RemoveRule(rule(1, "192.0.2.1"))],
        None,
    )
    .unwrap();
    assert!(s.state().rules.is_empty());
    let mut s = reopen(dir, s);
    assert_eq!(s.next_rule_id(), 3);
    let e = s
        .commit("admin", None, vec![Op::AddRule(rule(2, "192.0.2.9"))], None)
        .unwrap_err();
    assert!(e.to_string().contains("rule id 2 was used before"), "{e}");
    assert!(matches!(
        s.commit("admin", None, vec![Op::AddRule(rule(0, "192.0.2.9"))], None),
        Err(StoreError::Conflict(_))
    ));
    // Through a snapshot too.
    s.snapshot().unwrap();
    let s = reopen(dir, s);
    assert_eq!(s.next_rule_id(), 3);
}

#[test]
fn changes_are_all_or_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    s.commit("admin", None, vec![Op::AddAllow(allow("10.0.0.0/8"))], None)
        .unwrap();
    let before = image(&s);
    let lines = journal_lines(dir);

    let bad: Vec<(Vec<Op>, &str)> = vec![
        (
            vec![
                Op::AddRule(rule(2, "192.0.2.2")),
                Op::RemoveRule(rule(9, "192.0.2.9")),
            ],
            "rule 9 does not exist",
        ),
        (
            vec![
                Op::AddRule(rule(2, "192.0.2.2")),
                Op::AddRule(rule(2, "192.0.2.3")),
            ],
            "rule 2 already exists",
        ),
        (
            vec![Op::RemoveRule(rule(1, "192.0.2.99"))],
            "rule 1 differs",
        ),
        (
            vec![Op::AddAllow(allow("10.0.0.0/8"))],
            "10.0.0.0/8 is already on the allow list",
        ),
        (
            vec![Op::RemoveAllow(allow("172.16.0.0/12"))],
            "172.16.0.0/12 is not on the allow list",
        ),
        (
            vec![Op::SetMode {
                from: Mode::Observe,
                to: Mode::Enforce,
            }],
            "the mode is enforce, not observe",
        ),
        (
            vec![Op::SetMode {
                from: Mode::Enforce,
                to: Mode::Enforce,
            }],
            "already enforce",
        ),
        (
            vec![
                Op::RemoveRule(rule(1, "192.0.2.1")),
                Op::RemoveRule(rule(1, "192.0.2.1")),
            ],
            "rule 1 does not exist",
        ),
    ];
    for (ops, msg) in bad {
        let e = s.commit("admin", None, ops, None).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(e.to_string().contains(msg), "{e} lacks {msg}");
    }
    assert!(matches!(
        s.commit("admin", None, vec![], None),
        Err(StoreError::Empty)
    ));
    assert!(matches!(
        s.commit(
            "admin",
            None,
            vec![Op::AddRule(rule(2, "192.0.2.2"))],
            Some(77)
        ),
        Err(StoreError::NoSuchChange { id: 77 })
    ));
    let mut pre_epoch = rule(2, "192.0.2.2");
    pre_epoch.created_at = UNIX_EPOCH - Duration::from_secs(1);
    let e = s
        .commit("admin", None, vec![Op::AddRule(pre_epoch)], None)
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    let mut far = rule(2, "192.0.2.2");
    far.expires_at = Some(UNIX_EPOCH + Duration::from_secs(300_000_000_000));
    assert!(matches!(
        s.commit("admin", None, vec![Op::AddRule(far)], None),
        Err(StoreError::Invalid(_))
    ));

    assert_eq!(image(&s), before);
    assert_eq!(journal_lines(dir), lines);
    // Outside an undo, even a change that removes a rule cannot re-add its id with other
    // fields (only its expiry may change: an update).
    let mut readded = rule(1, "192.0.2.1");
    readded.reason = Some("edited".into());
    let e = s.commit(
        "admin",
        None,
        vec![Op::RemoveRule(rule(1, "192.0.2.1")), Op::AddRule(readded)],
        None,
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("rule id 1 was used before")
    );
    reopen(dir, s);
}

#[test]
fn bulk_change_is_one_line_and_one_undo() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    let ops: Vec<Op> = (1..=10_000u64)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            Op::AddRule(rule(i, &ip))
        })
        .collect();
    let c = s.commit("detector", Some("flood"), ops, None).unwrap();
    assert_eq!(journal_lines(dir), 1);
    assert_eq!(s.state().rules.len(), 10_000);
    assert_eq!(Store::summary(&c), "add 10000 rules");
    let full = s.state().clone();

    let undo = s.undo_ops(c.id).unwrap();
    assert_eq!(undo.len(), 10_000);
    assert!(matches!(&undo[0], Op::RemoveRule(r) if r.id == 10_000));
    let u = s.commit("admin", None, undo, Some(c.id)).unwrap();
    assert_eq!(Store::summary(&u), "undo change 1: remove 10000 rules");
    assert_eq!(journal_lines(dir), 2);
    assert!(s.state().rules.is_empty());
    assert!(matches!(
        s.undo_ops(c.id),
        Err(StoreError::NothingToUndo { id: 1, ref why }) if why.contains("undone by change 2")
    ));

    let redo = s.undo_ops(u.id).unwrap();
    let r = s.commit("admin", None, redo, Some(u.id)).unwrap();
    assert_eq!(*s.state(), full);
    assert_eq!(s.undone_by(u.id), Some(r.id));
    assert_eq!(s.next_rule_id(), 10_001);
    reopen(dir, s);
}

#[test]
fn undo_skips_rules_that_expired_and_expire_removes_due_rules() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    assert!(s.expire(t(5)).unwrap().is_none());
    let mut short = rule(1, "192.0.2.1");
    short.expires_at = Some(t(10));
    let mut long = rule(2, "192.0.2.2");
    long.expires_at = Some(t(100));
    let keep = rule(3, "192.0.2.3");
    let c = s
        .commit(
            "admin",
            None,
            vec![
                Op::AddRule(short.clone()),
                Op::AddRule(long.clone()),
                Op::AddRule(keep.clone()),
            ],
            None,
        )
        .unwrap();
    assert!(s.expire(t(9)).unwrap().is_none());
    // Due exactly at `now`.
    let e = s.expire(t(10)).unwrap().unwrap();
    assert_eq!(e.actor, "swarmwall");
    assert_eq!(e.reason.as_deref(), Some("expired"));
    assert_eq!(e.at, t(10));
    assert_eq!(e.ops, vec![Op::RemoveRule(short.clone())]);
    assert_eq!(Store::summary(&e), "remove rule 1 (drop 192.0.2.1)");
    assert_eq!(s.state().rules.len(), 2);

    // The undo leaves out the rule that expired.
    let undo = s.undo_ops(c.id).unwrap();
    assert_eq!(
        undo,
        vec![Op::RemoveRule(keep.clone()), Op::RemoveRule(long.clone())]
    );
    // Undoing the expiry brings the rule back.
    assert_eq!(s.undo_ops(e.id).unwrap(), vec![Op::AddRule(short.clone())]);

    let e2 = s.expire(t(1000)).unwrap().unwrap();
    assert_eq!(e2.ops, vec![Op::RemoveRule(long)]);
    s.commit("admin", None, vec![Op::RemoveRule(keep)], None)
        .unwrap();
    let err = s.undo_ops(c.id).unwrap_err();
    assert!(
        matches!(err, StoreError::NothingToUndo { id, .. } if id == c.id),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not exist (and 2 more)"),
        "{err}"
    );
    assert!(matches!(
        s.undo_ops(99),
        Err(StoreError::NoSuchChange { id: 99 })
    ));
    reopen(dir, s);
}

#[test]
fn undo_of_allow_and_mode_changes() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    let c = s
        .commit(
            "admin",
            None,
            vec![
                Op::AddAllow(allow("10.0.0.0/8")),
                Op::SetMode {
                    from: Mode::Enforce,
                    to: Mode::Observe,
                },
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        Store::summary(&c),
        "allow 10.0.0.0/8; mode enforce -> observe"
    );
    let undo = s.undo_ops(c.id).unwrap();
    assert_eq!(
        undo,
        vec![
            Op::SetMode {
                from: Mode::Observe,
                to: Mode::Enforce
            },
            Op::RemoveAllow(allow("10.0.0.0/8")),
        ]
    );
    let u = s.commit("admin", None, undo, Some(c.id)).unwrap();
    assert_eq!(
        Store::summary(&u),
        "undo change 1: remove allow entry 10.0.0.0/8; mode observe -> enforce"
    );
    assert_eq!(*s.state(), State::default());
    // Re-allowed since with another record: undoing the original add leaves it alone.
    let mut other = allow("10.0.0.0/8");
    other.actor = "someone".into();
    s.commit("someone", None, vec![Op::AddAllow(other)], None)
        .unwrap();
    let e = s.undo_ops(c.id).unwrap_err().to_string();
    assert_eq!(
        e,
        "nothing to undo in change 1: it was undone by change 2; the mode is enforce, not \
         observe (and 1 more)"
    );
    s.commit(
        "admin",
        None,
        vec![Op::SetMode {
            from: Mode::Enforce,
            to: Mode::Observe,
        }],
        None,
    )
    .unwrap();
    assert_eq!(
        s.undo_ops(c.id).unwrap(),
        vec![Op::SetMode {
            from: Mode::Observe,
            to: Mode::Enforce
        }]
    );
}

#[test]
fn summaries() {
    let mut r = rule(5, "192.0.2.7");
    r.expires_at = Some(r.created_at + Duration::from_secs(3600));
    let change = |ops: Vec<Op>, undoes| Change {
        id: 9,
        at: t(0),
        actor: "a".into(),
        reason: None,
        ops,
        undoes,
    };
    assert_eq!(
        Store::summary(&change(vec![Op::AddRule(r.clone())], None)),
        "add 1 rule: drop 192.0.2.7 (scope any, ttl 1h)"
    );
    let mut p = rule(6, "198.51.100.0/24");
    p.scope.proto = Some(Proto::Udp);
    p.scope.port = Some(53);
    assert_eq!(
        Store::summary(&change(vec![Op::AddRule(p)], None)),
        "add 1 rule: drop 198.51.100.0/24 (scope udp port 53, permanent)"
    );
    assert_eq!(
        Store::summary(&change(
            vec![
                Op::RemoveRule(r.clone()),
                Op::RemoveRule(rule(6, "192.0.2.8"))
            ],
            Some(3)
        )),
        "undo change 3: remove 2 rules"
    );
    assert_eq!(
        Store::summary(&change(
            vec![
                Op::AddAllow(allow("10.0.0.0/8")),
                Op::AddAllow(allow("192.168.0.0/16"))
            ],
            None
        )),
        "add 2 allow entries"
    );
}

#[test]
fn truncated_tail_keeps_the_valid_prefix() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    add(&mut s, "192.0.2.2");
    let after_two = s.state().clone();
    add(&mut s, "192.0.2.3");
    drop(s);
    let full = journal(dir);
    let cut = &full[..full.len() - 10];
    fs::write(dir.join(JOURNAL), cut).unwrap();

    let (mut s, warnings) = open_warned(dir);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    let copies = damaged_copies(dir, JOURNAL);
    assert_eq!(copies.len(), 1);
    assert!(w.contains("line 3, the last, is damaged"), "{w}");
    assert!(w.contains("cut short"), "{w}");
    assert!(w.contains("kept the 2 changes before it"), "{w}");
    assert!(w.contains(&copies[0].display().to_string()), "{w}");
    assert!(!w.contains("not applied"), "{w}");
    assert_eq!(fs::read(&copies[0]).unwrap(), cut);
    assert_eq!(*s.state(), after_two);
    assert_eq!(s.changes().len(), 2);
    assert_eq!(
        journal(dir),
        full[..cut.iter().rposition(|&b| b == b'\n').unwrap() + 1]
    );

    let c = add(&mut s, "192.0.2.4");
    assert_eq!(c.id, 3);
    let s = reopen(dir, s);
    assert_eq!(s.state().rules.len(), 3);
}

/// Every file of the store directory with its bytes: what a refused open must leave alone.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

fn refusal(dir: &Path) -> Damaged {
    match Store::open(dir).unwrap_err() {
        StoreError::Damaged(d) => *d,
        e => panic!("expected a refusal for damage, got {e:?}"),
    }
}

#[test]
fn corrupted_middle_line_refuses_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    add(&mut s, "192.0.2.2");
    add(&mut s, "192.0.2.3");
    s.snapshot().unwrap();
    drop(s);
    let original = journal(dir);
    let text = String::from_utf8(original.clone()).unwrap();
    // Still valid JSON, but not what was checksummed.
    let corrupted = text.replacen("192.0.2.2", "192.0.2.9", 1);
    assert_ne!(corrupted, text);
    fs::write(dir.join(JOURNAL), &corrupted).unwrap();
    let before = files_of(dir);

    let d = refusal(dir);
    assert_eq!((d.line, d.lines, d.intact_after), (2, 3, 1));
    assert_eq!(
        d.rules_at_stake, 1,
        "rule 3, added on line 3, would be lost"
    );
    assert_eq!(d.drop_line, Ok(1));
    let msg = d.to_string();
    for says in [
        "journal.jsonl is damaged at line 2 of 3 (checksum mismatch",
        "1 intact line follows it",
        "would remove 1 rule in force",
        "swarmwall rules repair --drop-line 2",
        "--keep-valid-prefix",
        "Nothing was changed",
    ] {
        assert!(msg.contains(says), "{msg}\nlacks: {says}");
    }
    // Refused twice over, and not a byte touched.
    refusal(dir);
    assert_eq!(files_of(dir), before);
}

#[test]
fn repair_drop_line_keeps_the_changes_after_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    for i in 1..=5 {
        add(&mut s, &format!("192.0.2.{i}"));
    }
    drop(s);
    let text = String::from_utf8(journal(dir)).unwrap();
    let corrupted = text.replacen("192.0.2.2", "192.0.2.9", 1);
    fs::write(dir.join(JOURNAL), &corrupted).unwrap();

    let seen = repair(dir, &Repair::Diagnose, "admin").unwrap();
    assert!(seen.original.is_none() && seen.change.is_none());
    assert_eq!(seen.before.refusal.as_ref().map(|d| d.line), Some(2));
    assert_eq!(files_of(dir).get(JOURNAL).unwrap(), corrupted.as_bytes());

    let e = repair(dir, &Repair::DropLines(BTreeSet::from([9])), "admin").unwrap_err();
    assert!(
        e.to_string()
            .contains("line 9: the journal has lines 1 to 5"),
        "{e}"
    );

    let done = repair(dir, &Repair::DropLines(BTreeSet::from([2])), "uid 0").unwrap();
    let original = done.original.unwrap();
    assert_eq!(fs::read(&original).unwrap(), corrupted.as_bytes());
    let change = done.change.unwrap();
    assert_eq!(change.actor, "uid 0");
    assert!(
        Store::summary(&change)
            .contains("journal repair: dropped line 2 of journal.jsonl (line 2: checksum mismatch"),
        "{}",
        Store::summary(&change)
    );
    assert_eq!(done.rules, 4);

    let s = open(dir);
    let targets: Vec<String> = s
        .state()
        .rules
        .values()
        .map(|r| r.target.to_string())
        .collect();
    assert_eq!(
        targets,
        ["192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"]
    );
    // The repair is history, not something to undo.
    let e = s.undo_ops(change.id).unwrap_err();
    assert!(e.to_string().contains("cannot be undone"), "{e}");
    assert!(
        e.to_string().contains(&original.display().to_string()),
        "{e}"
    );
    reopen(dir, s);
}

#[test]
fn drop_line_refuses_when_a_later_line_depends_on_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    let c = add(&mut s, "192.0.2.2");
    let Op::AddRule(r) = &c.ops[0] else { panic!() };
    s.commit("admin", None, vec![Op::RemoveRule(r.clone())], None)
        .unwrap();
    drop(s);
    let text = String::from_utf8(journal(dir)).unwrap();
    // Line 2 added the rule that line 3 removes.
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    lines[1] = "{\"crc\":1,\"chan\n";
    let damaged = lines.concat();
    fs::write(dir.join(JOURNAL), &damaged).unwrap();
    let d = refusal(dir);
    assert!(
        d.drop_line
            .as_ref()
            .unwrap_err()
            .contains("line 3 would then be damaged"),
        "{d:?}"
    );
    assert!(
        d.to_string()
            .contains("dropping only that line would not do"),
        "{d}"
    );
    let e = repair(dir, &Repair::DropLines(BTreeSet::from([2])), "admin").unwrap_err();
    assert!(e.to_string().contains("line 3 is damaged"), "{e}");
    assert_eq!(journal(dir), damaged.as_bytes());
    // Both lines out: consistent again.
    repair(dir, &Repair::DropLines(BTreeSet::from([2, 3])), "admin").unwrap();
    let s = open(dir);
    assert_eq!(s.state().rules.len(), 1);
}

#[test]
fn garbage_journal_refuses_and_keep_valid_prefix_empties_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    drop(open(dir));
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(garbage.iter().filter(|&&b| b == b'\n').count() > 1);
    fs::write(dir.join(JOURNAL), &garbage).unwrap();
    let d = refusal(dir);
    assert_eq!(d.line, 1);
    let done = repair(dir, &Repair::KeepValidPrefix, "admin").unwrap();
    assert_eq!(fs::read(done.original.unwrap()).unwrap(), garbage);
    let mut s = open(dir);
    assert_eq!(*s.state(), State::default());
    assert_eq!(s.changes().len(), 1, "only the repair itself");
    add(&mut s, "192.0.2.1");
    reopen(dir, s);
    let e = repair(dir, &Repair::KeepValidPrefix, "admin").unwrap_err();
    assert!(e.to_string().contains("no damage to repair"), "{e}");
}

#[test]
fn an_unreadable_last_line_is_a_torn_tail() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    let before = image(&s);
    drop(s);
    let mut j = journal(dir);
    j.extend_from_slice(b"{\"crc\":1,\"change\":{}}\n");
    fs::write(dir.join(JOURNAL), &j).unwrap();
    let (s, warnings) = open_warned(dir);
    assert!(
        warnings[0].contains("line 2, the last, is damaged"),
        "{warnings:?}"
    );
    assert_eq!(image(&s), before);
    assert_eq!(damaged_copies(dir, JOURNAL).len(), 1);
}

#[test]
fn change_that_does_not_apply_is_damage() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    let image1 = image(&s);
    drop(s);
    let bogus = Change {
        id: 2,
        at: t(0),
        actor: "x".into(),
        reason: None,
        ops: vec![Op::RemoveRule(rule(7, "192.0.2.7"))],
        undoes: None,
    };
    let mut line = codec::frame("change", &serde_json::to_string(&bogus).unwrap());
    line.push('\n');
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(JOURNAL))
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
    drop(f);
    // Well-formed and checksummed: no crash writes that, so even as the last line it is refused.
    let d = refusal(dir);
    assert!(
        d.why.contains("change 2 does not apply: conflict: rule 7"),
        "{d:?}"
    );
    repair(dir, &Repair::DropLines(BTreeSet::from([2])), "admin").unwrap();
    let s = open(dir);
    assert_eq!(s.state(), &image1.state);
}

#[test]
fn snapshot_then_tail_replays_only_the_tail() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    for i in 1..=5 {
        add(&mut s, &format!("192.0.2.{i}"));
    }
    s.snapshot().unwrap();
    s.commit(
        "admin",
        None,
        vec![Op::RemoveRule(rule(2, "192.0.2.2"))],
        None,
    )
    .unwrap();
    let u = s.undo_ops(1).unwrap();
    s.commit("admin", None, u, Some(1)).unwrap();
    add(&mut s, "192.0.2.6");
    let s = reopen(dir, s);
    assert_eq!(s.replayed, 3);
    assert_eq!(s.changes().len(), 8);
    assert_eq!(s.undone_by(1), Some(7));
    assert_eq!(s.next_rule_id(), 7);
}

#[test]
fn commit_snapshots_every_thousand_changes() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    for i in 0..SNAPSHOT_EVERY {
        let on = if i % 2 == 0 {
            Mode::Enforce
        } else {
            Mode::Observe
        };
        let off = if i % 2 == 0 {
            Mode::Observe
        } else {
            Mode::Enforce
        };
        s.commit("admin", None, vec![Op::SetMode { from: on, to: off }], None)
            .unwrap();
    }
    add(&mut s, "192.0.2.1");
    let s = reopen(dir, s);
    assert_eq!(s.replayed, 1);
    assert_eq!(s.changes().len(), SNAPSHOT_EVERY + 1);
}

#[test]
fn missing_snapshot_is_rebuilt() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    add(&mut s, "192.0.2.2");
    let before = image(&s);
    drop(s);
    fs::remove_file(dir.join(SNAPSHOT)).unwrap();
    let (s, warnings) = open_warned(dir);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("snapshot.json is missing"),
        "{warnings:?}"
    );
    assert_eq!(image(&s), before);
    assert_eq!(s.replayed, 2);
    drop(s);
    let s = open(dir);
    assert_eq!(s.replayed, 0);
}

#[test]
fn corrupt_snapshot_is_set_aside_and_rebuilt() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    s.snapshot().unwrap();
    add(&mut s, "192.0.2.2");
    let before = image(&s);
    drop(s);

    let good = fs::read_to_string(dir.join(SNAPSHOT)).unwrap();
    let bad_crc = good.replacen("192.0.2.1", "192.0.2.8", 1);
    for (bytes, says) in [
        (b"\x00\xffnot json".to_vec(), "not UTF-8"),
        (bad_crc.into_bytes(), "checksum mismatch"),
        (
            codec::frame("snapshot", "{\"format\":1}").into_bytes(),
            "not a snapshot",
        ),
        (
            codec::frame(
                "snapshot",
                "{\"format\":2,\"last_change\":0,\"next_change_id\":1,\"next_rule_id\":1,\
                 \"mode\":\"enforce\",\"rules\":[],\"allow\":[]}",
            )
            .into_bytes(),
            "format 2",
        ),
    ] {
        fs::write(dir.join(SNAPSHOT), &bytes).unwrap();
        let copies_before = damaged_copies(dir, SNAPSHOT).len();
        let (s, warnings) = open_warned(dir);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("is damaged"), "{warnings:?}");
        assert!(warnings[0].contains(says), "{warnings:?} lacks {says}");
        assert_eq!(image(&s), before);
        let copies = damaged_copies(dir, SNAPSHOT);
        assert_eq!(copies.len(), copies_before + 1);
        assert!(copies.iter().any(|c| fs::read(c).unwrap() == bytes));
        drop(s);
        drop(open(dir));
    }
}

#[test]
fn snapshot_ahead_of_the_journal_refuses_until_repaired() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    let after_one = s.state().clone();
    add(&mut s, "192.0.2.2");
    add(&mut s, "192.0.2.3");
    s.snapshot().unwrap();
    drop(s);
    let j = journal(dir);
    let first_line = j.iter().position(|&b| b == b'\n').unwrap() + 1;
    fs::write(dir.join(JOURNAL), &j[..first_line]).unwrap();
    let before = files_of(dir);
    let d = refusal(dir);
    assert_eq!(d.line, 0);
    assert!(d.to_string().contains("shorter than its snapshot"), "{d}");
    assert!(d.why.contains("includes changes up to 3"), "{d:?}");
    assert_eq!(files_of(dir), before);

    repair(dir, &Repair::KeepValidPrefix, "admin").unwrap();
    let mut s = open(dir);
    assert_eq!(s.state(), &after_one);
    assert_eq!(damaged_copies(dir, SNAPSHOT).len(), 1);
    // Ids the lost changes used stay used: the repair is change 4, the next rule 4.
    assert_eq!(s.next_rule_id(), 4);
    let c = add(&mut s, "192.0.2.4");
    assert_eq!(c.id, 5);
    assert_eq!(c.ops, vec![Op::AddRule(rule(4, "192.0.2.4"))]);
    reopen(dir, s);
}

#[test]
fn missing_journal_with_a_snapshot_refuses() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    s.snapshot().unwrap();
    drop(s);
    fs::remove_file(dir.join(JOURNAL)).unwrap();
    let e = Store::open(dir).unwrap_err();
    assert!(matches!(e, StoreError::Unusable { .. }), "{e:?}");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn leftover_tmp_files_from_a_crash_are_ignored() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    s.snapshot().unwrap();
    add(&mut s, "192.0.2.2");
    let before = image(&s);
    drop(s);
    // A crash mid-snapshot leaves a partial tmp file next to the intact snapshot.
    fs::write(dir.join("snapshot.json.tmp"), b"{\"crc\":12,\"snaps").unwrap();
    fs::write(dir.join("journal.jsonl.tmp"), b"{\"crc\"").unwrap();
    let s = open(dir);
    assert_eq!(image(&s), before);
    assert_eq!(s.replayed, 1);
    assert!(!dir.join("snapshot.json.tmp").exists());
    assert!(!dir.join("journal.jsonl.tmp").exists());
}

#[test]
fn synced_commit_is_on_disk_before_reopen() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    let c = add(&mut s, "192.0.2.1");
    // Read the file behind the open store's back, as a restart after a crash would.
    let scan = scan_journal(&dir.join(JOURNAL)).unwrap();
    assert!(scan.lines.iter().all(|l| l.parsed.is_ok()));
    assert_eq!(scan.changes().collect::<Vec<_>>(), [&c]);
    reopen(dir, s);
}

#[test]
fn a_second_open_is_refused_while_locked() {
    let tmp = TempDir::new().unwrap();
    let s = open(tmp.path());
    let e = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    drop(s);
    open(tmp.path());
}

#[test]
fn failed_append_leaves_state_and_journal_unchanged() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut s = open(dir);
    add(&mut s, "192.0.2.1");
    let before = image(&s);
    let bytes = journal(dir);
    s.fail_next_append = Some(20);
    let e = s
        .commit("admin", None, vec![Op::AddRule(rule(2, "192.0.2.2"))], None)
        .unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    assert_eq!(image(&s), before);
    assert_eq!(journal(dir), bytes);
    let c = add(&mut s, "192.0.2.2");
    assert_eq!(c.id, 2);
    reopen(dir, s);
}

#[test]
fn nothing_panics_on_bad_input() {
    for line in [
        &b""[..],
        b"\n",
        b"{\"crc\":",
        b"{\"crc\":99999999999999999999,\"change\":{}}\n",
        b"{\"crc\":1,\"change\":}\n",
        b"{\"crc\":1,\"chang\":{}}\n",
        "{\"crc\":1,\"change\":\"\u{e9}\"}\n".as_bytes(),
        b"\xff\xfe\n",
    ] {
        assert!(parse_line(line, 0).is_err());
    }
    for time in [
        "",
        "2024",
        "2024-13-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2024-01-01T00:00:00.x",
    ] {
        let json = format!(
            "{{\"id\":1,\"at\":\"{time}\",\"actor\":\"a\",\"ops\":[{{\"op\":\"set_mode\",\"from\":\"enforce\",\"to\":\"observe\"}}]}}"
        );
        let line = format!("{}\n", codec::frame("change", &json));
        assert!(parse_line(line.as_bytes(), 0).is_err(), "{time}");
    }
    for body in [
        "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"add_rule\",\"id\":1,\"target\":\"0.0.0.0/0\",\"action\":\"drop\",\"created_at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\"}]}",
        "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"add_rule\",\"id\":1,\"target\":\"192.0.2.1\",\"action\":\"reject\",\"created_at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\"}]}",
        "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"add_rule\",\"id\":1,\"target\":\"192.0.2.1\",\"action\":\"drop\",\"scope\":{\"proto\":\"sctp\"},\"created_at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\"}]}",
        "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"explode\"}]}",
        "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[]}",
        "{\"id\":0,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"set_mode\",\"from\":\"enforce\",\"to\":\"observe\"}]}",
    ] {
        let line = format!("{}\n", codec::frame("change", body));
        assert!(parse_line(line.as_bytes(), 0).is_err(), "{body}");
    }
    let ok = "{\"id\":1,\"at\":\"2024-01-01T00:00:00Z\",\"actor\":\"a\",\"ops\":[{\"op\":\"set_mode\",\"from\":\"enforce\",\"to\":\"observe\"}]}";
    assert!(parse_line(format!("{}\n", codec::frame("change", ok)).as_bytes(), 0).is_ok());
    assert!(decode_snapshot(b"").is_err());
    assert!(decode_snapshot(b"\n").is_err());
}

/// xorshift64*: a deterministic PRNG for the randomized test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn random_histories_survive_reopen() {
    const TARGETS: [&str; 8] = [
        "192.0.2.1",
        "192.0.2.2",
        "198.51.100.0/24",
        "203.0.113.0/25",
        "2001:db8::1",
        "2001:db8:1::/48",
        "10.0.0.0/8",
        "172.16.0.0/12",
    ];
    for seed in [1u64, 2, 3, 0x5eed] {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        let mut s = open(dir);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for _ in 0..250 {
            let pick = |rng: &mut Rng| TARGETS[rng.below(TARGETS.len() as u64) as usize];
            match rng.below(10) {
                0 | 1 => {
                    let n = 1 + rng.below(3);
                    let first = s.next_rule_id();
                    let ops = (0..n)
                        .map(|i| {
                            let mut r = rule(first + i, pick(&mut rng));
                            if rng.below(2) == 0 {
                                r.expires_at = Some(t(rng.below(100)));
                            }
                            r.action = if rng.below(2) == 0 {
                                Action::Drop
                            } else {
                                Action::Observe
                            };
                            Op::AddRule(r)
                        })
                        .collect();
                    let c = s.commit("admin", None, ops, None).unwrap();
                    assert_eq!(s.next_rule_id(), first + n);
                    assert_eq!(c.id, s.changes().last().unwrap().id);
                }
                2 => {
                    let rules: Vec<RuleRecord> = s.state().rules.values().cloned().collect();
                    if !rules.is_empty() {
                        let r = rules[rng.below(rules.len() as u64) as usize].clone();
                        s.commit("admin", None, vec![Op::RemoveRule(r)], None)
                            .unwrap();
                    }
                }
                3 => {
                    let tg = target(pick(&mut rng));
                    let op = match s.state().allow.get(&tg) {
                        Some(a) => Op::RemoveAllow(a.clone()),
                        None => Op::AddAllow(AllowRecord {
                            target: tg,
                            created_at: t(rng.below(50)),
                            actor: "admin".into(),
                            reason: None,
                        }),
                    };
                    s.commit("admin", None, vec![op], None).unwrap();
                }
                4 => {
                    let from = s.state().mode;
                    let to = match from {
                        Mode::Enforce => Mode::Observe,
                        Mode::Observe => Mode::Enforce,
                    };
                    s.commit("admin", None, vec![Op::SetMode { from, to }], None)
                        .unwrap();
                }
                5 | 6 => {
                    let n = s.changes().len() as u64;
                    if n > 0 {
                        let id = s.changes()[rng.below(n) as usize].id;
                        match s.undo_ops(id) {
                            Ok(ops) => {
                                let c = s.commit("admin", None, ops, Some(id)).unwrap();
                                assert_eq!(s.undone_by(id), Some(c.id));
                            }
                            Err(StoreError::NothingToUndo { .. }) => {}
                            Err(e) => panic!("undo of {id}: {e}"),
                        }
                    }
                }
                7 => {
                    let now = t(rng.below(120));
                    s.expire(now).unwrap();
                    assert!(
                        s.state()
                            .rules
                            .values()
                            .all(|r| r.expires_at.is_none_or(|e| e > now))
                    );
                }
                8 => {
                    // A change with one bad op in it changes nothing.
                    let before = image(&s);
                    let ops = vec![
                        Op::AddRule(rule(s.next_rule_id(), pick(&mut rng))),
                        Op::RemoveRule(rule(u64::MAX, "192.0.2.1")),
                    ];
                    assert!(s.commit("admin", None, ops, None).is_err());
                    assert_eq!(image(&s), before);
                }
                _ => {
                    if rng.below(2) == 0 {
                        s.snapshot().unwrap();
                    } else {
                        s = reopen(dir, s);
                    }
                }
            }
        }
        reopen(dir, s);
    }
}

#[test]
fn an_update_is_remove_and_add_under_one_id_in_one_change() {
    let dir = TempDir::new().unwrap();
    let mut s = open(dir.path());
    add(&mut s, "192.0.2.7");
    let old = s.state().rules[&1].clone();
    let mut new = old.clone();
    new.expires_at = Some(t(3600));
    // Re-adding a used id on its own is still refused: only an update may bring it back.
    assert!(
        s.commit("admin", None, vec![Op::AddRule(new.clone())], None)
            .is_err()
    );
    let c = s
        .commit(
            "admin",
            None,
            vec![Op::RemoveRule(old.clone()), Op::AddRule(new.clone())],
            None,
        )
        .unwrap();
    assert_eq!(s.state().rules[&1], new);
    assert!(Store::summary(&c).starts_with("update rule 1: drop 192.0.2.7"));
    let s = reopen(dir.path(), s);
    assert_eq!(s.state().rules[&1], new);
    let mut s = s;
    let undo = s.undo_ops(c.id).unwrap();
    s.commit("admin", None, undo, Some(c.id)).unwrap();
    assert_eq!(s.state().rules[&1], old);
    assert_eq!(s.next_rule_id(), 2);
}
