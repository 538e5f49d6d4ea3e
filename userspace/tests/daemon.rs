//! The real daemon, as a child process in a network namespace, driven by the real CLI. Needs
//! root. Each test builds its own lab: namespaces joined by a veth, a private BPF filesystem for
//! the pins (outside /sys, which `ip netns exec` remounts), a state directory and a socket; all
//! are removed by guards, also when the test fails.

use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use swarmwall_integration::{
    netns::{ChildGuard, NetNs, VethPair, add_addr, add_neigh},
    require_root,
    traffic::delivered,
};

const BIN: &str = env!("CARGO_BIN_EXE_swarmwall");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Everything one test needs; dropped in field order (daemon first, mounts last).
struct Lab {
    daemon: Option<ChildGuard>,
    link: VethPair,
    srv: NetNs,
    cli: NetNs,
    root: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = PathBuf::from(format!(
            "/run/swl-dtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("bpf")).unwrap();
        // A BPF filesystem of our own, mounted before `ip netns exec` copies the mount table, so
        // the daemon's pins outlive it and the test can remove them.
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(root.join("bpf"))
            .status()
            .unwrap();
        assert!(st.success(), "mounting a BPF filesystem");
        let srv = NetNs::new("swl-d-s").unwrap();
        let cli = NetNs::new("swl-d-c").unwrap();
        let link = VethPair::new(&srv, &cli, "198.51.100.1/24", "198.51.100.2/24").unwrap();
        for a in ["198.51.100.10", "198.51.100.11", "198.51.100.12"] {
            add_addr(&cli, &link.iface_b, &format!("{a}/24")).unwrap();
        }
        for a in [
            "198.51.100.2",
            "198.51.100.10",
            "198.51.100.11",
            "198.51.100.12",
        ] {
            add_neigh(&srv, &link.iface_a, ip(a), link.mac_b).unwrap();
        }
        add_neigh(&cli, &link.iface_b, ip("198.51.100.1"), link.mac_a).unwrap();
        Lab {
            daemon: None,
            link,
            srv,
            cli,
            root,
        }
    }

    fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    fn start(&mut self) {
        self.start_child();
        self.wait_up();
    }

    /// Waits (bounded) for the started daemon's socket; fails with its log if it exits first.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(self.socket()).is_err() {
            if Instant::now() > deadline {
                panic!("daemon did not come up; its log:\n{}", self.log());
            }
            if let Some(Some(status)) = self.daemon.as_mut().map(|d| d.try_wait().unwrap()) {
                panic!("daemon exited ({status}); its log:\n{}", self.log());
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn start_child(&mut self) {
        let log = std::fs::File::create(self.root.join("daemon.log")).unwrap();
        let child = self
            .srv
            .command(&[
                BIN,
                "--socket",
                self.socket().to_str().unwrap(),
                "daemon",
                "-i",
                &self.link.iface_a,
                "--state-dir",
                self.root.join("state").to_str().unwrap(),
                "--pin-dir",
                self.root.join("bpf/sw").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(ChildGuard::new(child));
    }

    /// Starts the daemon expecting it to refuse: waits for it to exit non-zero, returns its log.
    fn start_refused(&mut self) -> String {
        self.start_child();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                self.daemon = None;
                assert!(
                    !status.success(),
                    "the daemon exited 0; its log:\n{}",
                    self.log()
                );
                return self.log();
            }
            if UnixStream::connect(self.socket()).is_ok() || Instant::now() > deadline {
                panic!(
                    "the daemon came up instead of refusing; its log:\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up anything.
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill().unwrap();
            d.wait().unwrap();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI, expecting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "swarmwall {args:?} failed ({}): {}{}\ndaemon log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Sends `n` datagrams from each source; returns what arrived per source.
    fn traffic(&self, sources: &[&str], n: usize) -> Vec<u64> {
        let sources: Vec<_> = sources.iter().map(|s| ip(s)).collect();
        delivered(&self.srv, &self.cli, ip("198.51.100.1"), &sources, n).unwrap()
    }

    fn rule_targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .json(&["block", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["target"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill();
        let _ = swarmwall::dataplane::remove_pins(&self.root.join("bpf/sw"));
        let _ = Command::new("umount").arg(self.root.join("bpf")).status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn cli_rules_drop_traffic_and_survive_sigkill_and_restart() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "198.51.100.12", "--reason", "test"]);
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 30),
        vec![30, 0]
    );

    // SIGKILL: the pinned program keeps enforcing with no daemon at all.
    lab.kill();
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 30),
        vec![30, 0]
    );

    // Restarted: adopts the pins, reports the same rule with the drops it counted meanwhile.
    lab.start();
    let status = lab.json(&["status"]);
    assert_eq!(status["adopted"], true, "{status}");
    let rules = lab.json(&["block", "list"]);
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules[0]["target"], "198.51.100.12");
    assert_eq!(rules[0]["dropped"], 60, "{rules}");
    lab.ok(&[
        "block",
        "add",
        "198.51.100.11",
        "--port",
        "9",
        "--proto",
        "udp",
    ]);
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.11", "198.51.100.12"], 20),
        vec![20, 20, 0]
    );

    // `down` refuses while the daemon serves; once it is gone, it detaches for good.
    let pins = lab.root.join("bpf/sw");
    let refused = lab.cli(&["down", "--pin-dir", pins.to_str().unwrap()]);
    assert!(!refused.status.success());
    lab.kill();
    lab.ok(&["down", "--pin-dir", pins.to_str().unwrap()]);
    assert_eq!(lab.traffic(&["198.51.100.12"], 20), vec![20]);
}

#[test]
fn bulk_import_is_one_change_and_one_undo() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    let list = lab.root.join("list.txt");
    let mut f = std::fs::File::create(&list).unwrap();
    writeln!(f, "# a blocklist").unwrap();
    for i in 0..500u32 {
        writeln!(f, "192.0.{}.{}", 2 + i / 250, 1 + i % 250).unwrap();
    }
    writeln!(f, "198.51.100.12").unwrap();
    drop(f);
    lab.ok(&[
        "block",
        "import",
        list.to_str().unwrap(),
        "--reason",
        "blocklist",
    ]);
    assert_eq!(lab.json(&["block", "list"]).as_array().unwrap().len(), 501);
    assert_eq!(lab.traffic(&["198.51.100.12"], 10), vec![0]);
    let history = lab.json(&["rules", "history"]);
    let import = &history[0];
    assert_eq!(import["ops"], 501, "{history}");
    let id = import["id"].as_u64().unwrap().to_string();

    // Deleting many needs --yes, and refusing changes nothing.
    let o = lab.cli(&["block", "del", "--all"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lab.json(&["block", "list"]).as_array().unwrap().len(), 501);

    lab.ok(&["rules", "undo", &id]);
    assert!(lab.rule_targets().is_empty());
    assert_eq!(lab.traffic(&["198.51.100.12"], 10), vec![10]);
    // And the undo itself can be undone.
    let undo_id = lab.json(&["rules", "history"])[0]["id"]
        .as_u64()
        .unwrap()
        .to_string();
    lab.ok(&["rules", "undo", &undo_id]);
    assert_eq!(lab.json(&["block", "list"]).as_array().unwrap().len(), 501);
}

#[test]
fn a_truncated_journal_tail_is_set_aside_and_the_rest_used() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "198.51.100.10"]);
    lab.ok(&["block", "add", "198.51.100.11"]);
    lab.ok(&["block", "add", "198.51.100.12"]);
    lab.kill();
    // Cut the last change in half, as a crash mid-write on a broken disk could.
    let journal = lab.root.join("state/journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 20;
    std::fs::write(&journal, &text[..cut]).unwrap();
    lab.start();
    assert!(lab.log().contains("damaged"), "{}", lab.log());
    assert_eq!(lab.rule_targets(), vec!["198.51.100.10", "198.51.100.11"]);
    // Said where the admin looks, not only in the log.
    let status = lab.ok(&["status"]);
    assert!(
        status.contains("warning:     rule store:") && status.contains("line 3, the last"),
        "{status}"
    );
    let kept: Vec<_> = std::fs::read_dir(lab.root.join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged journal is kept aside");
    assert_eq!(
        std::fs::read_to_string(kept[0].path()).unwrap(),
        text[..cut]
    );
    // The kernel follows the store: .12 is no longer blocked.
    assert_eq!(
        lab.traffic(&["198.51.100.11", "198.51.100.12"], 10),
        vec![0, 10]
    );
}

#[test]
fn non_root_peers_cannot_change_rules() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    // The socket is 0600 root: another uid cannot even connect. Open it up to test the peer
    // check itself, which must still refuse a mutation.
    std::fs::set_permissions(
        lab.socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let dir_mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&lab.root, dir_mode).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--socket",
        ])
        .arg(lab.socket())
        .args(["block", "add", "198.51.100.12"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403")
            || err.to_lowercase().contains("forbidden")
            || err.contains("not allowed"),
        "{err}"
    );
    assert!(lab.rule_targets().is_empty());
}

#[test]
fn garbage_on_the_socket_gets_400_and_others_are_still_served() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    let mut bad = UnixStream::connect(lab.socket()).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"\x00\x01GARBAGE \xff\xfe nonsense\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = bad.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // A client that stalls half-way through a request does not block others either.
    let mut slow = UnixStream::connect(lab.socket()).unwrap();
    slow.write_all(b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    lab.ok(&["block", "add", "198.51.100.12"]);
    assert_eq!(lab.rule_targets(), vec!["198.51.100.12"]);
    drop(slow);
}

/// The files of a directory with their bytes.
fn dir_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_damaged_middle_line_refuses_to_start_and_removes_no_rule() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "198.51.100.12", "--reason", "line 1"]);
    for i in 2..=16 {
        lab.ok(&["block", "add", &format!("192.0.2.{i}")]);
    }
    lab.ok(&["block", "add", "198.51.100.11", "--reason", "line 17"]);
    lab.kill();
    // One byte changed on line 10 of 17: a bad disk or a careless editor, not a crash.
    let state = lab.root.join("state");
    let journal = state.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    assert_eq!(lines.len(), 17);
    lines[9] = lines[9].replacen("192.0.2.10", "192.0.2.99", 1);
    std::fs::write(&journal, lines.concat()).unwrap();
    let before = dir_files(&state);

    let log = lab.start_refused();
    for says in [
        "journal.jsonl is damaged at line 10 of 17",
        "checksum mismatch",
        "7 intact lines follow it",
        "would remove 7 rules in force",
        "swarmwall rules repair --drop-line 10",
    ] {
        assert!(log.contains(says), "the refusal lacks {says:?}:\n{log}");
    }
    assert_eq!(dir_files(&state), before, "a refused start changes no file");
    // The data plane was not touched: both rules, from before and after the damage, still drop.
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.11", "198.51.100.12"], 10),
        vec![10, 0, 0]
    );

    let sd = state.to_str().unwrap();
    let o = lab.cli(&["rules", "repair", "--state-dir", sd]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a diagnosis of a refused store fails"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("line 10 of 17"));
    let o = lab.cli(&["rules", "repair", "--state-dir", sd, "--keep-valid-prefix"]);
    assert_eq!(o.status.code(), Some(2), "--keep-valid-prefix needs --yes");
    assert_eq!(dir_files(&state), before);

    let out = lab.ok(&["rules", "repair", "--state-dir", sd, "--drop-line", "10"]);
    assert!(out.contains("dropped line 10"), "{out}");
    assert!(out.contains("16 rules in force"), "{out}");
    lab.start();
    let targets = lab.rule_targets();
    assert_eq!(targets.len(), 16, "{targets:?}");
    assert!(!targets.contains(&"192.0.2.10".to_owned()), "{targets:?}");
    assert!(targets.contains(&"198.51.100.11".to_owned()), "{targets:?}");
    let history = lab.json(&["rules", "history"]);
    assert!(
        history[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("journal repair: dropped line 10"),
        "{history}"
    );
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.11", "198.51.100.12"], 10),
        vec![10, 0, 0]
    );
}

// --- The own-address guard follows the host's addresses (issue 8, item 4). ---

#[test]
fn an_address_added_to_the_host_at_runtime_cannot_be_blocked_until_it_is_removed() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    // Added after start-up (and after any SIGHUP): only a watcher of the host's addresses
    // knows it.
    add_addr(&lab.srv, &lab.link.iface_a, "192.0.2.77/24").unwrap();
    for target in ["192.0.2.77", "192.0.2.0/24"] {
        let o = lab.cli(&["block", "add", target]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("own address") && err.contains("192.0.2.77"),
            "block add {target}: {} {err}\ndaemon log:\n{}",
            o.status,
            lab.log()
        );
    }
    assert!(lab.rule_targets().is_empty());
    lab.srv
        .run(&[
            "ip",
            "addr",
            "del",
            "192.0.2.77/24",
            "dev",
            &lab.link.iface_a,
        ])
        .unwrap();
    // Removed: free to block at once (the guard reads the kernel's notifications before it
    // checks).
    lab.ok(&["block", "add", "192.0.2.77"]);
    lab.ok(&["block", "add", "192.0.2.0/24"]);
    assert_eq!(lab.rule_targets(), vec!["192.0.2.0/24", "192.0.2.77"]);
}

// ---- One owner of the pinned data plane; start-up and shutdown (issue 8: items 5, 6, 8, 10) ----

impl Lab {
    fn pins(&self) -> PathBuf {
        self.root.join("bpf/sw")
    }

    /// The daemon's usual command line on `socket`, plus `extra`, started in the server
    /// namespace without waiting for it; its log goes to `log` under the lab root.
    fn spawn_daemon(&self, socket: &std::path::Path, extra: &[&str], log: &str) -> ChildGuard {
        let log = std::fs::File::create(self.root.join(log)).unwrap();
        let mut argv = vec![
            BIN,
            "--socket",
            socket.to_str().unwrap(),
            "daemon",
            "-i",
            &self.link.iface_a,
            "--state-dir",
            self.root.join("state").to_str().unwrap(),
            "--pin-dir",
            self.pins().to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        argv.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = self
            .srv
            .command(&argv)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildGuard::new(child)
    }

    /// Every file under the pin directory (map and link pins, and anything a start left behind),
    /// relative to it, sorted.
    fn pin_files(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.pins(), &self.pins(), &mut out);
        out.sort();
        out
    }
}

/// Waits (bounded) for `child` to exit; returns its status.
fn wait_exit(child: &mut ChildGuard, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn down_refuses_while_a_daemon_owns_the_pins_whatever_the_socket() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "198.51.100.12"]);
    let pid = lab.daemon.as_ref().unwrap().id();
    let before = lab.pin_files();
    assert!(!before.is_empty());

    // Another socket than the daemon's: nothing answers there, and still `down` must refuse.
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(lab.root.join("other.sock"))
        .arg("down")
        .arg("--pin-dir")
        .arg(lab.pins())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "down succeeded: {err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert_eq!(
        lab.pin_files(),
        before,
        "down removed pins of a running daemon"
    );
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 20),
        vec![20, 0]
    );
    assert_eq!(
        lab.json(&["status"])["interfaces"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_bad_interface_is_refused_before_anything_is_pinned() {
    require_root!();
    let mut lab = Lab::new();
    let mut bad = lab.spawn_daemon(&lab.socket(), &["-i", "nosuchif0"], "bad.log");
    let status = wait_exit(&mut bad, Duration::from_secs(30));
    let log = std::fs::read_to_string(lab.root.join("bad.log")).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("nosuchif0"), "{log}");
    assert_eq!(lab.pin_files(), Vec::<String>::new(), "{log}");
    lab.start();
    lab.ok(&["block", "add", "198.51.100.12"]);
    assert_eq!(lab.traffic(&["198.51.100.12"], 10), vec![0]);
}

#[test]
fn a_start_killed_at_any_point_is_followed_by_a_start_that_works() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "198.51.100.12"]);
    lab.kill();
    // None: kill as soon as the first pin appears (maps half created); Some(ms): after a delay.
    let points = [None, Some(0), Some(20), Some(60), Some(150), Some(400)];
    for (i, point) in points.into_iter().enumerate() {
        for sig in [libc::SIGKILL, libc::SIGTERM] {
            // Half the runs build a fresh data plane, half adopt the one left pinned.
            if i % 2 == 0 {
                swarmwall::dataplane::remove_pins(&lab.pins()).unwrap();
            }
            let mut d = lab.spawn_daemon(&lab.socket(), &[], "killed.log");
            match point {
                None => {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while lab.pin_files().is_empty() && Instant::now() < deadline {
                        std::thread::yield_now();
                    }
                }
                Some(ms) => sleep(Duration::from_millis(ms)),
            }
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(d.id() as i32, sig) };
            wait_exit(&mut d, Duration::from_secs(30));
            drop(d);
            let _ = std::fs::remove_file(lab.socket());
            lab.start();
            assert_eq!(
                lab.rule_targets(),
                vec!["198.51.100.12"],
                "after a start killed ({sig}) at {point:?}"
            );
            lab.kill();
        }
    }
    lab.start();
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 10),
        vec![10, 0]
    );
}

#[test]
fn block_add_is_not_delayed_by_a_counter_sample_over_a_million_sources() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    // Fill the daemon's LRU through its pin (one test run per source would take hours).
    let n: u32 = swarmwall_maps::defaults::SOURCES;
    {
        use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
        let data = MapData::from_pin(lab.pins().join("maps").join(swarmwall_maps::names::SOURCES))
            .unwrap();
        let mut lru: PerCpuHashMap<MapData, [u8; 16], swarmwall_maps::SourceCounters> =
            PerCpuHashMap::try_from(Map::PerCpuLruHashMap(data)).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        for i in 0..n {
            let o = std::net::Ipv4Addr::from((10 << 24) + i).octets();
            let mut per_cpu = vec![swarmwall_maps::SourceCounters::default(); cpus];
            per_cpu[0] = swarmwall_maps::SourceCounters {
                packets: 1,
                bytes: 64,
                dropped: 0,
                first_seen_ns: 1,
                last_seen_ns: 1,
            };
            lru.insert(
                swarmwall_maps::v4_mapped(o),
                PerCpuValues::try_from(per_cpu).unwrap(),
                0,
            )
            .unwrap();
        }
    }
    // A sample of that many takes seconds (read, then fold), and the next one starts a second
    // after it ends: mutating for 15 s overlaps several.
    let mut worst = Duration::ZERO;
    let mut took = Vec::new();
    let start = Instant::now();
    for i in 0..250u32 {
        if start.elapsed() > Duration::from_secs(15) {
            break;
        }
        let t = Instant::now();
        lab.ok(&[
            "block",
            "add",
            &format!("192.0.{}.{}", 2 + i / 250, 1 + i % 250),
        ]);
        let d = t.elapsed();
        took.push(d.as_millis());
        worst = worst.max(d);
        sleep(Duration::from_millis(50));
    }
    took.sort();
    eprintln!(
        "block add while sampling {n} sources: {} adds, median {} ms, worst {} ms",
        took.len(),
        took[took.len() / 2],
        worst.as_millis()
    );
    // The samples did read the million (else the mutations overlapped nothing).
    let deadline = Instant::now() + Duration::from_secs(60);
    let tracked = loop {
        let tracked = lab.json(&["top"])["tracked"].as_u64().unwrap();
        if tracked > u64::from(n) / 2 || Instant::now() > deadline {
            break tracked;
        }
        sleep(Duration::from_millis(500));
    };
    assert!(
        tracked > u64::from(n) / 2,
        "the sampler saw {tracked} sources; daemon log:\n{}",
        lab.log()
    );
    assert!(
        worst < Duration::from_millis(700),
        "a block add waited {worst:?} behind the counter sampler"
    );
}

#[test]
fn a_daemon_waits_for_a_predecessor_that_still_holds_the_locks() {
    require_root!();
    let mut lab = Lab::new();
    // What a killed daemon still exiting holds: the store's lock and the pin directory's.
    // Declared after the lab, so a failing test closes them before the lab unmounts its bpffs.
    let state = lab.root.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(lab.pins()).unwrap();
    let mut held = Vec::new();
    for dir in [&state, &lab.pins()] {
        let f = std::fs::File::open(dir).unwrap();
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        assert_eq!(rc, 0);
        held.push(f);
    }
    lab.daemon = Some(lab.spawn_daemon(&lab.socket(), &[], "daemon.log"));
    sleep(Duration::from_millis(1500));
    let gave_up = lab.daemon.as_mut().unwrap().try_wait().unwrap();
    assert!(
        gave_up.is_none(),
        "the daemon quit while the locks were held: {}",
        lab.log()
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(lab.socket()).is_err() {
        assert!(
            Instant::now() < deadline,
            "daemon did not come up:\n{}",
            lab.log()
        );
        sleep(Duration::from_millis(100));
    }
    assert!(lab.log().contains("waiting"), "{}", lab.log());
    lab.ok(&["block", "add", "198.51.100.12"]);
}

/// One raw HTTP request on the control socket; the whole answer.
fn raw_request(lab: &Lab, method: &str, path: &str, body: &str) -> String {
    let mut s = UnixStream::connect(lab.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn a_huge_ttl_through_the_api_is_a_400_naming_the_range() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    for ttl in [u64::MAX.to_string(), "400000000000".to_string()] {
        let body = format!("{{\"rules\":[{{\"target\":\"198.51.100.12\",\"ttl_s\":{ttl}}}]}}");
        let answer = raw_request(&lab, "POST", "/v1/rules", &body);
        assert!(answer.starts_with("HTTP/1.1 400"), "ttl_s {ttl}: {answer}");
        assert!(
            answer.contains("longer than the longest TTL") && answer.contains("10years"),
            "ttl_s {ttl}: {answer}"
        );
    }
    // The daemon is whole: it still serves and blocks.
    lab.ok(&["block", "add", "198.51.100.12", "--ttl", "10m"]);
    assert_eq!(lab.rule_targets(), vec!["198.51.100.12"]);
}

// ---- What an admin reaches for: rules by address, updates, idempotent imports, verdicts,
// JSON errors. ----

impl Lab {
    /// Runs the CLI, expecting it to fail with `code`; returns (stdout, stderr).
    fn fails(&self, args: &[&str], code: i32) -> (String, String) {
        let o = self.cli(args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "swarmwall {args:?}: {out}{err}"
        );
        (out, err)
    }

    fn ids(&self, args: &[&str]) -> Vec<u64> {
        let mut a = vec!["block", "list"];
        a.extend_from_slice(args);
        let mut v: Vec<u64> = self
            .json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    }

    /// One raw HTTP request on the control socket; the status line's code and the body.
    fn http(&self, request: &str) -> (u16, String) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let code = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (code, body)
    }
}

#[test]
fn rules_are_deleted_and_listed_by_address() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["block", "add", "192.0.2.8"]);
    lab.ok(&[
        "block",
        "add",
        "192.0.2.8",
        "--proto",
        "tcp",
        "--port",
        "443",
    ]);
    lab.ok(&["block", "add", "192.0.2.0/25"]);
    lab.ok(&["block", "add", "192.0.2.200"]);
    // Overlap: the address's own rules and the prefix covering it; a prefix shows what is in it.
    assert_eq!(lab.ids(&["--target", "192.0.2.8"]), vec![1, 2, 3]);
    assert_eq!(lab.ids(&["--target", "192.0.2.0/24"]), vec![1, 2, 3, 4]);
    assert_eq!(lab.ids(&["--target", "192.0.2.128/25"]), vec![4]);
    assert_eq!(
        lab.ids(&["--origin", "admin", "--actor", "0"]),
        vec![1, 2, 3, 4]
    );
    assert!(lab.ids(&["--origin", "swarm"]).is_empty());
    assert!(lab.ids(&["--actor", "12345"]).is_empty());

    // Two rules have that target: --yes is needed, and refusing changes nothing.
    let (_, err) = lab.fails(&["block", "del", "192.0.2.8"], 2);
    assert!(err.contains("2 rules"), "{err}");
    assert_eq!(lab.ids(&[]), vec![1, 2, 3, 4]);
    let out = lab.ok(&["block", "del", "192.0.2.8", "--yes"]);
    assert!(out.contains("remove 2 rules"), "{out}");
    assert_eq!(lab.ids(&[]), vec![3, 4]);
    // One rule: no --yes needed. An address no rule has is a 404, not "invalid digit".
    lab.ok(&["block", "del", "192.0.2.0/25"]);
    let (_, err) = lab.fails(&["block", "del", "192.0.2.99"], 1);
    assert!(err.contains("no rule has the target 192.0.2.99"), "{err}");
    assert_eq!(lab.ids(&[]), vec![4]);
}

#[test]
fn re_adding_a_rule_updates_its_expiry_and_imports_are_idempotent() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    let rule = |lab: &Lab, id: u64| {
        lab.json(&["block", "list"])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no rule {id}"))
    };
    lab.ok(&["block", "add", "198.51.100.12", "--ttl", "10m"]);
    let before = rule(&lab, 1)["expires_at"].as_str().unwrap().to_owned();
    let r = lab.json(&["block", "add", "198.51.100.12", "--ttl", "2h"]);
    assert!(
        r["summary"].as_str().unwrap().contains("update rule 1"),
        "{r}"
    );
    assert_eq!(r["updated"], serde_json::json!([1]), "{r}");
    let after = rule(&lab, 1)["expires_at"].as_str().unwrap().to_owned();
    assert!(after > before, "{before} -> {after}");
    // Shorter works too; the rule keeps its id and stays in the kernel.
    lab.ok(&["block", "add", "198.51.100.12", "--ttl", "5m"]);
    assert_eq!(lab.ids(&[]), vec![1]);
    assert!(rule(&lab, 1)["expires_at"].as_str().unwrap() < before.as_str());
    assert_eq!(
        lab.traffic(&["198.51.100.12", "198.51.100.10"], 20),
        vec![0, 20]
    );
    // Undoing the last update restores the previous expiry.
    let last = lab.json(&["rules", "history"])[0]["id"].as_u64().unwrap();
    lab.ok(&["rules", "undo", &last.to_string()]);
    assert_eq!(rule(&lab, 1)["expires_at"].as_str().unwrap(), after);

    let list = lab.root.join("feed.txt");
    std::fs::write(
        &list,
        "198.51.100.12\n192.0.2.9\n192.0.2.9   # twice\n198.51.100.1\n",
    )
    .unwrap();
    let file = list.to_str().unwrap();
    // A dry run says what would happen, with why, and changes nothing.
    let changes = lab.json(&["rules", "history"]).as_array().unwrap().len();
    let p = lab.json(&["block", "import", file, "--ttl", "1d", "--dry-run"]);
    assert_eq!(p["added"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["updated"][0]["id"], 1, "{p}");
    assert_eq!(p["unchanged"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["refused"][0]["target"], "198.51.100.1", "{p}");
    assert!(
        p["refused"][0]["why"]
            .as_str()
            .unwrap()
            .contains("own address"),
        "{p}"
    );
    let text = lab.ok(&["block", "import", file, "--ttl", "1d", "--dry-run"]);
    assert!(
        text.contains("would add 1, update 1, leave 1 unchanged, refuse 1"),
        "{text}"
    );
    assert_eq!(
        lab.json(&["rules", "history"]).as_array().unwrap().len(),
        changes
    );
    assert_eq!(lab.ids(&[]), vec![1]);

    // Without the refused line: one change, existing rules updated instead of failing it.
    std::fs::write(&list, "198.51.100.12\n192.0.2.9\n192.0.2.9\n").unwrap();
    let r = lab.json(&["block", "import", file]);
    assert_eq!(r["rules"], serde_json::json!([2]), "{r}");
    assert_eq!(r["updated"], serde_json::json!([1]), "{r}");
    assert_eq!(r["unchanged"], serde_json::json!([2]), "{r}");
    assert_eq!(rule(&lab, 1)["expires_at"], Value::Null);
    // Again: nothing to change, and success.
    let out = lab.ok(&["block", "import", file]);
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(lab.ids(&[]), vec![1, 2]);
    assert_eq!(lab.traffic(&["198.51.100.12"], 10), vec![0]);
}

#[test]
fn block_test_agrees_with_the_kernel_on_real_traffic() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    lab.ok(&["allow", "add", "198.51.100.11"]);
    lab.ok(&["block", "add", "198.51.100.10", "--observe"]);
    lab.ok(&["block", "add", "198.51.100.12", "--proto", "tcp"]);
    lab.ok(&[
        "block",
        "add",
        "198.51.100.12",
        "--dst",
        "198.51.100.1",
        "--proto",
        "udp",
    ]);
    lab.ok(&["block", "add", "198.51.100.10", "--dst", "198.51.100.99"]);
    // `delivered` sends UDP to a sink on 198.51.100.1 at some port: no port scope is used.
    let verdict = |src: &str| {
        lab.json(&[
            "block",
            "test",
            src,
            "--dst",
            "198.51.100.1",
            "--proto",
            "udp",
            "--port",
            "40000",
        ])
    };
    let sources = [
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.2",
    ];
    let got = lab.traffic(&sources, 20);
    for (src, got) in sources.iter().zip(got) {
        let v = verdict(src);
        let expect = if v["action"] == "drop" { 0 } else { 20 };
        assert_eq!(got, expect, "{src}: the CLI says {v}");
    }
    let v = verdict("198.51.100.12");
    assert_eq!(
        (v["rule"]["id"].as_u64(), &v["stage"]),
        (Some(3), &Value::from("exact"))
    );
    assert_eq!(v["unmatched"][0]["id"], 2, "{v}");
    let v = verdict("198.51.100.10");
    assert_eq!(
        (v["outcome"].as_str(), v["rule"]["id"].as_u64()),
        (Some("observed"), Some(1))
    );
    assert_eq!(verdict("198.51.100.11")["allowed_by"], "198.51.100.11");
    let text = lab.ok(&["block", "test", "198.51.100.12", "--port", "80"]);
    assert!(text.contains("drop: rule 2"), "{text}");
    lab.ok(&["mode", "observe"]);
    let v = verdict("198.51.100.12");
    assert_eq!(
        (v["action"].as_str(), v["in_enforce_mode"].as_str()),
        (Some("pass"), Some("drop"))
    );
    assert_eq!(lab.traffic(&["198.51.100.12"], 10), vec![10]);
}

#[test]
fn json_errors_are_json_and_reasons_have_no_control_characters() {
    require_root!();
    let mut lab = Lab::new();
    lab.start();
    let error = |text: &str| -> Value {
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    };
    let (out, err) = lab.fails(&["block", "del", "99", "--json"], 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(error(&err)["error"]["code"], "not_found", "{err}");
    let (_, err) = lab.fails(&["block", "add", "nonsense", "--json"], 2);
    assert_eq!(error(&err)["error"]["code"], "usage", "{err}");
    lab.ok(&["block", "add", "192.0.2.1"]);
    lab.ok(&["block", "add", "192.0.2.1", "--port", "80"]);
    let (_, err) = lab.fails(&["block", "del", "192.0.2.1", "--json"], 2);
    assert_eq!(error(&err)["error"]["code"], "refused", "{err}");
    let o = Command::new(BIN)
        .args(["--socket", "/nonexistent/sock", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(error(&err)["error"]["code"], "unreachable", "{err}");

    let (_, err) = lab.fails(&["block", "add", "192.0.2.2", "--reason", "a\nb"], 2);
    assert!(err.contains("control character"), "{err}");
    // The daemon refuses them too, whoever the client is.
    let body = r#"{"rules":[{"target":"192.0.2.3"}],"reason":"x\u001b[2Jy"}"#;
    let (code, answer) = lab.http(&format!(
        "POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("control character"), "{answer}");
    assert_eq!(lab.ids(&[]), vec![1, 2]);
}

// ---- Access logs: the pages behind HTTPS (issue 9). ----

/// A combined-format line, as nginx writes it.
fn combined(src: &str, path: &str, ua: &str) -> String {
    format!(
        "{src} - - [01/May/2024:12:00:00 +0000] \"GET {path} HTTP/1.1\" 200 5120 \"-\" \"{ua}\"\n"
    )
}

fn append_to(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn an_https_swarm_in_the_access_log_is_blocked_through_a_log_rotation() {
    require_root!();
    let mut lab = Lab::new();
    let logs = lab.root.join("nginx");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("shop.access.log");
    std::fs::write(&log, combined("192.0.2.200", "/old", "before the start")).unwrap();
    lab.start_with_config(&format!(
        "[[sources.log]]\npath = {:?}\nformat = \"combined\"\nsite = [\"198.51.100.1:443\"]\n\
         trusted_proxies = [\"198.51.100.2\"]\n",
        log.to_str().unwrap()
    ));
    let source = |lab: &Lab| lab.json(&["swarms"])["pipeline"]["sources"][0].clone();
    assert_eq!(source(&lab)["name"], log.to_str().unwrap());

    // A flood of garbage is counted and changes nothing.
    let mut garbage = String::new();
    for i in 0..200 {
        garbage.push_str(&format!("\u{1b}]0;junk {i} \"\"\"\n"));
    }
    append_to(&log, &garbage);
    // The trusted proxy is never blocked.
    let o = lab.cli(&["block", "add", "198.51.100.2"]);
    assert!(!o.status.success(), "the trusted proxy was blocked");
    assert!(String::from_utf8_lossy(&o.stderr).contains("trusted proxy"));

    // 12 bots fetch two gallery pages over HTTPS; 3 visitors browse with their assets. Halfway,
    // logrotate renames the log and nginx keeps writing to the old file for one more round
    // before it reopens the new one.
    let bots: Vec<String> = (10..22).map(|i| format!("192.0.2.{i}")).collect();
    let visitors = ["203.0.113.7", "203.0.113.8", "203.0.113.9"];
    let mut written = 1 + 200;
    let mut current = log.clone();
    for round in 0..12 {
        if round == 6 {
            std::fs::rename(&log, logs.join("shop.access.log.1")).unwrap();
            current = logs.join("shop.access.log.1");
            std::fs::write(&log, "").unwrap();
        }
        if round == 7 {
            current = log.clone();
        }
        let mut text = String::new();
        for b in &bots {
            text.push_str(&combined(
                b,
                &format!("/gallery/{}", 1 + round % 2),
                "curl/8.0",
            ));
            written += 1;
        }
        for (i, v) in visitors.iter().enumerate() {
            for path in [format!("/p/{round}/{i}"), format!("/img/{round}/{i}.jpg")] {
                text.push_str(&combined(
                    v,
                    &path,
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                ));
                written += 1;
            }
        }
        append_to(&current, &text);
        sleep(Duration::from_millis(200));
    }

    // Every line was read, through the rotation; the garbage was rejected.
    let deadline = Instant::now() + Duration::from_secs(10);
    while source(&lab)["read"].as_u64().unwrap() < written - 1 && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    let s = source(&lab);
    // The line present before the start is not read (the log is followed from its end).
    assert_eq!(s["read"], written - 1, "{s}");
    assert_eq!(s["rejected"], 200, "{s}");
    // The lag: nothing left unread, and the newest line is as old as the time written in it
    // (2024), in the API and in `status`.
    assert_eq!(s["behind_bytes"], 0, "{s}");
    assert!(
        s["newest_line_age_ms"].as_u64().unwrap() > 365 * 86_400_000,
        "{s}"
    );
    let status = lab.cli(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("0B unread, newest line "), "{status}");

    // The swarm is found in the log and blocked on the HTTPS site, member by member.
    let deadline = Instant::now() + Duration::from_secs(10);
    let swarm = loop {
        let v = lab.json(&["swarms"]);
        if let Some(s) = v["swarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["state"] == "blocked")
        {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no blocked swarm: {v}\n{}",
            lab.log()
        );
        sleep(Duration::from_millis(200));
    };
    let mut members: Vec<String> = swarm["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    members.sort();
    let mut want = bots.clone();
    want.sort();
    assert_eq!(members, want, "{swarm}");
    assert_eq!(swarm["site"], "198.51.100.1:443", "{swarm}");
    // Each bot's rule, or (as here, where every source seen in 192.0.2.0/24 is a member) their
    // /24, scoped to the HTTPS site; no visitor, and not the proxy, is covered.
    let rules = lab.json(&["block", "list"]);
    let nets: Vec<ipnet::IpNet> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["scope"]["dst"], "198.51.100.1", "{r}");
            assert_eq!(r["scope"]["port"], 443, "{r}");
            assert_eq!(r["scope"]["proto"], "tcp", "{r}");
            assert!(r["expires_at"].is_string(), "{r}");
            let t = r["target"].as_str().unwrap();
            t.parse()
                .unwrap_or_else(|_| ipnet::IpNet::from(t.parse::<IpAddr>().unwrap()))
        })
        .collect();
    let covered = |a: &str| {
        nets.iter()
            .any(|n| n.contains(&a.parse::<IpAddr>().unwrap()))
    };
    assert!(bots.iter().all(|b| covered(b)), "{rules}");
    assert!(
        !visitors.iter().any(|v| covered(v)) && !covered("198.51.100.2"),
        "{rules}"
    );
    let status = lab.ok(&["status"]);
    assert!(status.contains("source:      log "), "{status}");
}

impl Lab {
    /// Starts the daemon with `toml` as its config file; waits for its socket.
    fn start_with_config(&mut self, toml: &str) {
        let config = self.root.join("config.toml");
        std::fs::write(&config, toml).unwrap();
        let child = self.spawn_daemon(
            &self.socket(),
            &["--config", config.to_str().unwrap()],
            "daemon.log",
        );
        self.daemon = Some(child);
        self.wait_up();
    }
}

// ---- Prometheus metrics (issue 11) ----

/// An HTTP/1.1 GET of `path` on `addr` from the client namespace, with the `Accept` header
/// Prometheus sends when `openmetrics`: (status code, content type, body).
fn scrape(lab: &Lab, addr: &str, path: &str, openmetrics: bool) -> (u16, String, String) {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    let accept = if openmetrics {
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
    } else {
        ""
    };
    swarmwall_integration::netns::in_netns(&lab.cli, move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: "))
            .unwrap_or_default()
            .to_owned();
        (code, ctype, body.to_owned())
    })
    .unwrap()
}

#[test]
fn metrics_show_what_was_dropped_and_pass_promtool() {
    require_root!();
    let promtool = which("promtool").expect(
        "promtool is missing: `cargo xtask setup` installs it (from Debian's prometheus package)",
    );
    let mut lab = Lab::new();
    let at = "198.51.100.1:9469";
    lab.start_with_config(&format!("[metrics]\nlisten = \"{at}\"\n"));
    lab.ok(&["block", "add", "198.51.100.12"]);
    lab.ok(&["block", "add", "2001:db8::/64", "--reason", "a test"]);
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 20),
        vec![20, 0]
    );

    let (code, ctype, om) = scrape(&lab, at, "/metrics", true);
    assert_eq!(code, 200, "{om}\n{}", lab.log());
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    // Without the header: the classic text format, which promtool checks.
    let (code, ctype, body) = scrape(&lab, at, "/metrics", false);
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let line = |want: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(want)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {want} in:\n{body}"))
            .parse::<f64>()
            .unwrap()
    };
    assert!(
        line(r#"swarmwall_packets_total{verdict="drop",reason="exact_rule"}"#) >= 20.0,
        "{body}"
    );
    assert_eq!(
        line(r#"swarmwall_rules{origin="admin",action="drop",family="ipv4"}"#),
        1.0
    );
    assert_eq!(
        line(r#"swarmwall_rules{origin="admin",action="drop",family="ipv6"}"#),
        1.0
    );
    assert!(line(r#"swarmwall_rules_dropped_packets{origin="admin"}"#) >= 20.0);

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, _, body) = scrape(&lab, at, "/v1/status", false);
    assert_eq!(code, 404, "only /metrics is served there: {body}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

#[test]
fn a_metrics_address_the_daemon_cannot_listen_on_is_a_warning_not_a_failed_start() {
    require_root!();
    let mut lab = Lab::new();
    // Not an address of the server's namespace.
    lab.start_with_config("[metrics]\nlisten = \"192.0.2.99:9469\"\n");
    let warnings = lab.json(&["status"])["warnings"].to_string();
    assert!(
        warnings.contains("[metrics] listen = \\\"192.0.2.99:9469\\\": cannot listen there"),
        "{warnings}"
    );
    // And it protects as usual.
    lab.ok(&["block", "add", "198.51.100.12"]);
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 10),
        vec![10, 0]
    );
}

// ---- The firewall mirror (issue 11) ----

/// The lab's nftables table (in the server namespace) as swarmwall reads it; `None`: no table.
fn nft_table(lab: &Lab) -> Option<swarmwall::firewall::nft::listing::Listing> {
    let out = lab
        .srv
        .exec(&["nft", "-j", "list", "table", "inet", "swarmwall"])
        .unwrap();
    out.status.success().then(|| {
        swarmwall::firewall::nft::listing::parse(&String::from_utf8_lossy(&out.stdout), "swarmwall")
            .unwrap()
    })
}

/// An admin's hand: `nft VERB element inet swarmwall SET { ELEM }` in the server namespace.
fn nft_by_hand(lab: &Lab, verb: &str, set: &str, elem: &str) {
    let elem = format!("{{ {elem} }}");
    lab.srv
        .run(&["nft", verb, "element", "inet", "swarmwall", set, &elem])
        .unwrap();
}

/// Its elements as nft writes their keys, sorted, with the seconds each has left.
fn nft_elements(lab: &Lab) -> Vec<(String, Option<u64>)> {
    let mut v: Vec<_> = nft_table(lab)
        .expect("the table exists")
        .elems
        .iter()
        .map(|(e, h)| (format!("{} {e}", e.shape.set_name()), h.expires_s))
        .collect();
    v.sort();
    v
}

#[test]
fn the_firewall_mirrors_cli_rules_survives_the_daemon_reconciles_and_down_removes_it() {
    require_root!();
    let mut lab = Lab::new();
    let config = "[firewall]\nbackend = \"nftables\"\n";
    lab.start_with_config(config);
    lab.ok(&[
        "block",
        "add",
        "198.51.100.12",
        "--ttl",
        "10m",
        "--dst",
        "198.51.100.1",
        "--proto",
        "tcp",
        "--port",
        "80",
    ]);
    lab.ok(&["block", "add", "203.0.113.0/24"]);
    lab.ok(&["allow", "add", "198.51.100.10"]);
    let held = nft_elements(&lab);
    assert_eq!(held.len(), 3, "{held:?}");
    assert_eq!(held[0], ("allow_v4_32 198.51.100.10".into(), None));
    assert_eq!(
        held[1],
        ("drop_v4_24 203.0.113.0".into(), None),
        "permanent"
    );
    let (scoped, left) = &held[2];
    assert_eq!(
        scoped,
        "drop_v4_32_dst_proto_port 198.51.100.12 . 198.51.100.1 . 6 . 80"
    );
    assert!(left.is_some_and(|s| (590..=600).contains(&s)), "{left:?}");
    let status = lab.ok(&["status"]);
    assert!(
        status.contains("firewall:    nftables mirror, table inet swarmwall: 3 elements"),
        "{status}"
    );
    let listed: Value = serde_json::from_str(&lab.ok(&["block", "list", "--json"])).unwrap();
    let rules = listed
        .as_array()
        .or(listed["rules"].as_array())
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 2, "{listed}");
    for r in &rules {
        assert_eq!(
            r["enforced_by"],
            serde_json::json!(["xdp", "nftables"]),
            "{r}"
        );
    }
    assert!(lab.ok(&["block", "list"]).contains("xdp+nftables"));

    // The daemon dies; the table stays (the kernel goes on enforcing); an admin's hand deletes
    // one of its elements and adds a stranger to one of its sets.
    lab.kill();
    nft_by_hand(&lab, "delete", "drop_v4_24", "203.0.113.0");
    nft_by_hand(&lab, "add", "drop_v4_24", "192.0.2.0");
    lab.start_with_config(config);
    let back = nft_elements(&lab);
    assert_eq!(back.len(), 3, "{back:?}\n{}", lab.log());
    assert!(
        back.contains(&("drop_v4_24 203.0.113.0".into(), None)),
        "{back:?}"
    );
    assert!(
        !back.iter().any(|(k, _)| k.contains("192.0.2.0")),
        "{back:?}"
    );
    let status = lab.ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["firewall"]["drift"], 2, "{status}");
    assert_eq!(v["firewall"]["healthy"], true, "{status}");
    // An undo reaches the firewall too.
    lab.ok(&["block", "del", "203.0.113.0/24"]);
    assert_eq!(nft_elements(&lab).len(), 2);

    lab.kill();
    let config_path = lab.root.join("config.toml");
    let o = lab
        .srv
        .exec(&[
            BIN,
            "--config",
            config_path.to_str().unwrap(),
            "--socket",
            lab.socket().to_str().unwrap(),
            "down",
            "--pin-dir",
            lab.pins().to_str().unwrap(),
        ])
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        said.contains("removed the nftables table inet swarmwall"),
        "{said}"
    );
    assert!(nft_table(&lab).is_none(), "down removes the table");
}

#[test]
fn a_firewall_that_cannot_be_reached_is_unhealthy_in_status_and_xdp_still_drops() {
    require_root!();
    let mut lab = Lab::new();
    lab.start_with_config("[firewall]\nbackend = \"nftables\"\nnft = \"/nonexistent/nft\"\n");
    lab.ok(&["block", "add", "198.51.100.12"]);
    assert_eq!(
        lab.traffic(&["198.51.100.10", "198.51.100.12"], 20),
        vec![20, 0]
    );
    let status = lab.ok(&["status"]);
    assert!(
        status.contains("UNHEALTHY (XDP still enforces; retrying)")
            && status.contains("/nonexistent/nft"),
        "{status}"
    );
    assert_eq!(
        lab.rule_targets(),
        ["198.51.100.12"],
        "the journal keeps the rule"
    );
}

#[test]
fn a_running_daemon_restores_a_hand_deleted_element_and_mirrors_every_change_meanwhile() {
    require_root!();
    let mut lab = Lab::new();
    lab.start_with_config("[firewall]\nbackend = \"nftables\"\nreconcile_every = \"1s\"\n");
    lab.ok(&["block", "add", "203.0.113.0/24"]);
    nft_by_hand(&lab, "delete", "drop_v4_24", "203.0.113.0");
    // Changes go on while the periodic reconciles run (each takes the mirror out of the lock).
    for i in 1..=20 {
        lab.ok(&["block", "add", &format!("192.0.2.{i}")]);
        sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = nft_elements(&lab);
        if held.len() == 21 && held.iter().any(|(k, _)| k == "drop_v4_24 203.0.113.0") {
            break;
        }
        assert!(Instant::now() < deadline, "{held:?}\n{}", lab.log());
        sleep(Duration::from_millis(200));
    }
}
