//! Network namespaces and veth pairs as RAII guards, for tests that put real traffic through
//! the kernel.
//!
//! Everything a test creates here is uniquely named (prefix, process id, counter), so parallel
//! runs and leftovers of a crashed run never collide, and is removed when its guard drops — also
//! when the test panics, since unwinding runs `Drop`. The namespaces have no route out: traffic
//! sent inside them stays inside them.
//!
//! ```no_run
//! use swarmwall_integration::netns::{NetNs, VethPair};
//!
//! # fn main() -> anyhow::Result<()> {
//! let client = NetNs::new("swc")?;
//! let server = NetNs::new("sws")?;
//! let link = VethPair::new(&client, &server, "198.51.100.1/24", "198.51.100.2/24")?;
//! client.run(&["ping", "-c", "1", "-W", "2", "198.51.100.2"])?;
//! println!("server side is {}", link.iface_b);
//! # Ok(())
//! # }
//! ```

use std::{
    fs::File,
    io,
    net::IpAddr,
    ops::{Deref, DerefMut},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::{Pid, geteuid},
};
use pnet::datalink::{self, Channel};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Environment variable that turns "skipping: needs root" into a test failure, for CI, where a
/// silently skipped kernel test would hide a broken runner.
pub const REQUIRE_ROOT_ENV: &str = "SWARMWALL_REQUIRE_ROOT";

/// Longest interface name Linux accepts (`IFNAMSIZ` − 1 for the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// One counter for namespace, interface and MAC names: the pid tells runs apart, this tells
/// apart the objects of one run.
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Whether the process runs with effective uid 0 (namespaces, veths and XDP need it).
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// Whether [`REQUIRE_ROOT_ENV`] is set to `1`, so root-only tests must fail rather than skip.
pub fn root_required() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).is_ok_and(|v| v == "1")
}

/// Returns early from a root-only test when not root, printing `skipping: needs root`.
///
/// With `SWARMWALL_REQUIRE_ROOT=1` it panics instead, so CI (which runs as root) cannot pass by
/// skipping everything. In a test that returns a value, give the value to return:
/// `require_root!(Ok(()))`.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root!(())
    };
    ($ret:expr) => {
        if !$crate::netns::is_root() {
            if $crate::netns::root_required() {
                panic!(
                    "this test needs root, and {}=1 forbids skipping it",
                    $crate::netns::REQUIRE_ROOT_ENV
                );
            }
            eprintln!("skipping: needs root");
            return $ret;
        }
    };
}

/// Identifies a network namespace by the (device, inode) of an nsfs file: what `/proc/PID/ns/net`
/// and the `/run/netns/NAME` bind mount share when they are the same namespace.
fn ns_id(path: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// Runs `ip` with `args`, failing with its stderr if it exits non-zero.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("could not run `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`ip netns add`), deleted on drop.
///
/// Drop first kills every process still inside (a leftover `tcpdump` or server would otherwise
/// keep the namespace, its veths and any XDP program on them alive after the name is gone), then
/// deletes the namespace. Errors during drop are ignored: there is no one left to report them to.
/// A socket opened inside through [`in_netns`] keeps the (then nameless) namespace alive until
/// the socket closes.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `{prefix}-{pid}-{n}` with `n` unique within this process.
    ///
    /// A leftover namespace of the same name (from an earlier run that had our pid) is left
    /// alone and the next `n` tried: it is not ours to delete.
    pub fn new(prefix: &str) -> Result<NetNs> {
        const ATTEMPTS: usize = 64;
        let pid = std::process::id();
        for _ in 0..ATTEMPTS {
            let name = format!("{prefix}-{pid}-{}", next_id());
            if PathBuf::from(NETNS_DIR).join(&name).exists() {
                continue;
            }
            ip(&["netns", "add", &name])
                .with_context(|| format!("creating network namespace {name}"))?;
            return Ok(NetNs { name });
        }
        bail!("creating a network namespace: {ATTEMPTS} names with prefix {prefix:?} were taken")
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that pins the namespace; open it to `setns` into it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A command running `argv` inside the namespace (`ip netns exec NAME argv…`), for callers
    /// that want to set up stdio or the environment themselves.
    ///
    /// # Panics
    /// If `argv` is empty.
    pub fn command(&self, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "no command to run in {}", self.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` in the namespace to completion and returns its output whatever its exit
    /// status — a test expecting failure (a ping that XDP drops) checks `status` itself.
    /// Fails only if the command could not be started.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.command(argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run `{}` in netns {}", argv.join(" "), self.name))
    }

    /// Runs `argv` in the namespace and returns its stdout; fails, with its stderr, unless it
    /// exits successfully.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            bail!(
                "`{}` in netns {} failed ({}): {}{}",
                argv.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `argv` in the namespace in the background, stdin closed, stdout and stderr
    /// inherited; the process is killed when the guard drops. To capture its output instead,
    /// configure [`NetNs::command`] and wrap the child in [`ChildGuard::new`].
    ///
    /// Returns once the process is inside the namespace (or has already exited): `ip netns exec`
    /// enters it only after starting, and until then [`NetNs::pids`] would not list it and a
    /// namespace dropped in between would miss it.
    pub fn spawn(&self, argv: &[&str]) -> Result<ChildGuard> {
        const ENTER_TIMEOUT: Duration = Duration::from_secs(5);
        let mut child = self
            .command(argv)
            .stdin(Stdio::null())
            .spawn()
            .map(ChildGuard::new)
            .with_context(|| {
                format!(
                    "could not start `{}` in netns {}",
                    argv.join(" "),
                    self.name
                )
            })?;
        let target = ns_id(&self.path())?;
        let proc_ns = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        let deadline = Instant::now() + ENTER_TIMEOUT;
        while ns_id(&proc_ns).ok() != Some(target) {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}` did not enter netns {} within {ENTER_TIMEOUT:?}",
                    argv.join(" "),
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(child)
    }

    /// Process ids inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(ip(&["netns", "pids", &self.name])?
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let own = std::process::id() as i32;
        for pid in self.pids().unwrap_or_default() {
            // Never ourselves: a stray setns on our main thread must not turn cleanup into
            // suicide (ip netns pids looks at each process's main thread).
            if pid != own {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// A child process that is killed (and reaped) when the guard drops, so a test that fails midway
/// leaves no capture or server running. Derefs to [`Child`].
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// Takes the child out of the guard: it will no longer be killed on drop (e.g. to call
    /// [`Child::wait_with_output`]).
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("present until into_inner or drop")
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child
            .as_ref()
            .expect("present until into_inner or drop")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("present until into_inner or drop")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A veth pair joining two namespaces: `iface_a` in the first, `iface_b` in the second, both up,
/// with the given addresses, `lo` up on both sides. Dropping it deletes the pair (deleting either
/// end deletes both); deleting a namespace deletes it too.
#[derive(Debug)]
pub struct VethPair {
    /// The interface in the first namespace.
    pub iface_a: String,
    /// The interface in the second namespace.
    pub iface_b: String,
    /// `iface_a`'s MAC: the source for [`crate::packets::Frame::macs`] when injecting on it.
    pub mac_a: [u8; 6],
    /// `iface_b`'s MAC: the destination to use so `iface_b`'s stack accepts injected frames.
    pub mac_b: [u8; 6],
    ns_a: String,
}

impl VethPair {
    /// Creates the pair directly inside `ns_a` and `ns_b` and configures both ends. `addr_a` and
    /// `addr_b` are CIDRs (`198.51.100.1/24`, `2001:db8::1/64`); IPv6 ones skip duplicate
    /// address detection, so they are usable at once rather than after a second or two.
    pub fn new(ns_a: &NetNs, ns_b: &NetNs, addr_a: &str, addr_b: &str) -> Result<VethPair> {
        let (id, pid) = (next_id(), std::process::id());
        let (iface_a, iface_b) = veth_names(pid, id);
        let (mac_a, mac_b) = (veth_mac(pid, id, 0xa), veth_mac(pid, id, 0xb));
        // Created in place, the ends never appear in the host namespace, where a name could
        // collide with a real interface or another run's.
        ip(&[
            "link",
            "add",
            &iface_a,
            "address",
            &mac_string(mac_a),
            "netns",
            &ns_a.name,
            "type",
            "veth",
            "peer",
            "name",
            &iface_b,
            "address",
            &mac_string(mac_b),
            "netns",
            &ns_b.name,
        ])
        .with_context(|| format!("creating veth pair {iface_a}/{iface_b}"))?;
        // From here on, a failure drops `pair`, which deletes the half-configured veths.
        let pair = VethPair {
            iface_a,
            iface_b,
            mac_a,
            mac_b,
            ns_a: ns_a.name.clone(),
        };
        for (ns, iface, addr) in [(ns_a, &pair.iface_a, addr_a), (ns_b, &pair.iface_b, addr_b)] {
            ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
            add_addr(ns, iface, addr)?;
            ip(&["-n", &ns.name, "link", "set", iface, "up"])?;
        }
        for (ns, iface) in [(ns_a, &pair.iface_a), (ns_b, &pair.iface_b)] {
            wait_until_ready(ns, iface)?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.ns_a, "link", "delete", &self.iface_a]);
    }
}

/// Waits until `iface` can transmit: operationally up, with its real qdisc attached.
///
/// `link set up` returns before the kernel's link watcher has run; until then the device keeps
/// the `noop` qdisc, which silently drops everything sent — a test's first packet would vanish.
fn wait_until_ready(ns: &NetNs, iface: &str) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let line = ip(&["-n", &ns.name, "-o", "link", "show", "dev", iface])?;
        if line.contains(" state UP ") && !line.contains(" qdisc noop ") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{iface} in netns {} not ready after {TIMEOUT:?}: {line}",
                ns.name
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Interface names for pair `id` of process `pid`: `v{pid:x}n{id:x}a` / `…b`. Hex keeps them
/// within [`IFNAME_MAX`] for any Linux pid (at most 2^22) and a million pairs per process, and
/// `n` (not a hex digit) keeps pid and id apart.
fn veth_names(pid: u32, id: u32) -> (String, String) {
    let stem = format!("v{pid:x}n{:x}", id & 0xf_ffff);
    (format!("{stem}a"), format!("{stem}b"))
}

/// A locally administered unicast MAC derived from pid, pair id and side, so two runs on one
/// host never produce the same one.
fn veth_mac(pid: u32, id: u32, side: u8) -> [u8; 6] {
    let [_, p1, p2, p3] = pid.to_be_bytes();
    let [_, _, i1, i2] = id.to_be_bytes();
    [0x02 | (side << 4), p1, p2, p3, i1, i2]
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Adds another address (CIDR) to `iface` in `ns`, e.g. many sources for a swarm. IPv6
/// addresses get `nodad`, so they are usable immediately.
pub fn add_addr(ns: &NetNs, iface: &str, cidr: &str) -> Result<()> {
    let host = cidr.split('/').next().unwrap_or(cidr);
    let is_v6 = host
        .parse::<IpAddr>()
        .with_context(|| format!("{cidr:?} is not an address/prefix"))?
        .is_ipv6();
    let mut args = vec!["-n", &ns.name, "addr", "add", cidr, "dev", iface];
    if is_v6 {
        args.push("nodad");
    }
    ip(&args).map(drop)
}

/// Adds a permanent neighbour entry (`ip neigh replace … nud permanent`) for `addr` on `iface`
/// in `ns`, so the stack there sends to `addr` without ARP or neighbour discovery.
///
/// For tests that count packets per source exactly: IPv6 neighbour discovery is ICMPv6 from the
/// very addresses under test (and an XDP drop of a blocked source's solicitation would leave its
/// traffic stuck in the neighbour queue), while permanent entries make the wire carry only what
/// the test sends.
pub fn add_neigh(ns: &NetNs, iface: &str, addr: IpAddr, mac: [u8; 6]) -> Result<()> {
    ip(&[
        "-n",
        &ns.name,
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        &mac_string(mac),
        "dev",
        iface,
        "nud",
        "permanent",
    ])
    .map(drop)
}

/// Runs `f` on a fresh thread that has entered `ns`'s network namespace, and returns its result.
///
/// Sockets, netlink handles and XDP attachments `f` creates belong to `ns` and stay there after
/// the thread ends (a `UdpSocket` can be returned and used from anywhere). The caller's thread is
/// never moved: `setns` affects only the calling thread, and a test thread left in a namespace
/// would carry it into whatever the harness runs next. `/sys` is not remounted, so inside `f`
/// ask the kernel via netlink or ioctls (e.g. `if_nametoindex`), not `/sys/class/net`.
///
/// A panic in `f` propagates to the caller, so assertions inside `f` work as usual.
pub fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> Result<T> {
    let handle =
        File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            setns(&handle, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into netns {}", ns.name))?;
            Ok(f())
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sends raw Ethernet frames out of `iface` in `ns` (through an `AF_PACKET` socket), bypassing the
/// sender's IP stack — the way to emit spoofed sources, odd headers and broken packets. Returns
/// the number of frames sent.
pub fn send_frames(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) -> Result<usize> {
    in_netns(ns, || {
        let interface = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == iface)
            .with_context(|| format!("no interface {iface} in netns {}", ns.name))?;
        let (mut tx, _rx) = match datalink::channel(&interface, datalink::Config::default())
            .with_context(|| format!("opening a packet socket on {iface}"))?
        {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => bail!("unexpected channel type on {iface}"),
        };
        for (i, frame) in frames.iter().enumerate() {
            tx.send_to(frame, None)
                .unwrap_or_else(|| Err(io::Error::other("send_to returned nothing")))
                .with_context(|| format!("sending frame {i} ({} bytes) on {iface}", frame.len()))?;
        }
        Ok(frames.len())
    })?
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};

    use super::*;
    use crate::packets::{Frame, IPV6_DEST_OPTS, IPV6_HOP_BY_HOP, IPV6_ROUTING};

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ() {
        let (a, b) = veth_names(4_194_304, 0xf_ffff);
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX, "{a} {b}");
        assert_ne!(a, b);
        assert_ne!(veth_names(0x12, 0x3).0, veth_names(0x1, 0x23).0);
    }

    #[test]
    fn veth_macs_are_local_unicast_and_differ_per_side() {
        let (a, b) = (veth_mac(77, 5, 0xa), veth_mac(77, 5, 0xb));
        for mac in [a, b] {
            assert_eq!(mac[0] & 0x01, 0, "unicast");
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(a, b);
        assert_eq!(mac_string([0x02, 0xab, 0, 1, 2, 0xff]), "02:ab:00:01:02:ff");
    }

    #[test]
    fn root_required_reads_the_env() {
        // Only checks the parsing direction that is safe to observe without mutating the
        // environment (tests run in one process; set_var would race other tests).
        if std::env::var_os(REQUIRE_ROOT_ENV).is_none() {
            assert!(!root_required());
        }
    }

    fn netns_exists(name: &str) -> bool {
        Path::new(NETNS_DIR).join(name).exists()
    }

    #[test]
    fn namespaces_ping_across_a_veth_and_vanish_on_drop() {
        require_root!();
        let (name_a, name_b, iface);
        {
            let a = NetNs::new("swt").unwrap();
            let b = NetNs::new("swt").unwrap();
            let pair = VethPair::new(&a, &b, "198.51.100.1/24", "198.51.100.2/24").unwrap();
            add_addr(&a, &pair.iface_a, "2001:db8::1/64").unwrap();
            add_addr(&b, &pair.iface_b, "2001:db8::2/64").unwrap();
            a.run(&["ping", "-c", "1", "-W", "2", "198.51.100.2"])
                .unwrap();
            a.run(&["ping", "-6", "-c", "1", "-W", "2", "2001:db8::2"])
                .unwrap();
            // No route out: an address outside the lab subnet is unreachable from inside.
            let out = a
                .exec(&["ping", "-c", "1", "-W", "1", "192.0.2.1"])
                .unwrap();
            assert!(
                !out.status.success(),
                "lab namespace must have no route out"
            );
            name_a = a.name().to_owned();
            name_b = b.name().to_owned();
            iface = pair.iface_a.clone();
            assert!(netns_exists(&name_a) && netns_exists(&name_b));
        }
        assert!(!netns_exists(&name_a), "{name_a} survived its guard");
        assert!(!netns_exists(&name_b), "{name_b} survived its guard");
        assert!(
            !ip(&["-o", "link", "show"]).unwrap().contains(&iface),
            "veth {iface} leaked into the host namespace"
        );
    }

    #[test]
    fn namespace_is_deleted_when_the_test_body_panics() {
        require_root!();
        let name = std::sync::Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let ns = NetNs::new("swp").unwrap();
            let other = NetNs::new("swp").unwrap();
            let _pair = VethPair::new(&ns, &other, "198.51.100.1/30", "198.51.100.2/30").unwrap();
            // A background process inside must not keep it alive either.
            let _sleeper = ns.spawn(&["sleep", "30"]).unwrap();
            *name.lock().unwrap() = ns.name().to_owned();
            assert!(netns_exists(ns.name()));
            panic!("deliberate failure inside the test body");
        });
        assert!(result.is_err());
        let name = name.into_inner().unwrap();
        assert!(!name.is_empty());
        assert!(!netns_exists(&name), "{name} survived a panic");
        let listed = ip(&["netns", "list"]).unwrap();
        assert!(!listed.contains(&name), "ip netns list still shows {name}");
    }

    #[test]
    fn dropping_a_namespace_kills_processes_left_inside() {
        require_root!();
        let ns = NetNs::new("swk").unwrap();
        // Not guarded: the namespace's own Drop has to deal with it.
        let mut child = ns.spawn(&["sleep", "30"]).unwrap().into_inner();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(ns.pids().unwrap().contains(&pid));
        drop(ns);
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep was killed, not left to finish");
    }

    #[test]
    fn in_netns_opens_sockets_inside_and_propagates_panics() {
        require_root!();
        let a = NetNs::new("swi").unwrap();
        let b = NetNs::new("swi").unwrap();
        let _pair = VethPair::new(&a, &b, "198.51.100.1/24", "198.51.100.2/24").unwrap();
        let server = in_netns(&b, || UdpSocket::bind("198.51.100.2:0"))
            .unwrap()
            .unwrap();
        let to = server.local_addr().unwrap();
        in_netns(&a, || {
            let client = UdpSocket::bind("198.51.100.1:0").unwrap();
            client.send_to(b"ping", to).unwrap();
        })
        .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.ip().to_string(), "198.51.100.1");
        // The caller's thread stayed in the host namespace: the lab address is not local here.
        assert!(UdpSocket::bind("198.51.100.2:0").is_err());

        let panicked = std::panic::catch_unwind(|| in_netns(&a, || panic!("inside")));
        assert!(panicked.is_err());
    }

    /// Injects built frames on one end of a veth and expects the kernel on the other end to
    /// deliver them to a UDP socket: proof that the builder's headers and checksums are right.
    fn delivered_by_kernel(frames: impl Fn(&VethPair, u16) -> Vec<Vec<u8>>, v6: bool) {
        let a = NetNs::new("swf").unwrap();
        let b = NetNs::new("swf").unwrap();
        let (addr_a, addr_b, bind) = if v6 {
            ("2001:db8::1/64", "2001:db8::2/64", "[2001:db8::2]:0")
        } else {
            ("198.51.100.1/24", "198.51.100.2/24", "198.51.100.2:0")
        };
        let pair = VethPair::new(&a, &b, addr_a, addr_b).unwrap();
        let server = in_netns(&b, || UdpSocket::bind(bind)).unwrap().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let frames = frames(&pair, port);
        assert_eq!(
            send_frames(&a, &pair.iface_a, &frames).unwrap(),
            frames.len()
        );
        for i in 0..frames.len() {
            let mut buf = [0; 4096];
            let (n, from): (usize, SocketAddr) = server
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("frame {i} not delivered: {e}"));
            assert_eq!(&buf[..n], format!("frame {i}").as_bytes());
            assert_eq!(from.port(), 40000);
        }
    }

    #[test]
    fn kernel_accepts_built_ipv4_frames() {
        require_root!();
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        let dst: IpAddr = "198.51.100.2".parse().unwrap();
        delivered_by_kernel(
            |pair, port| {
                let base = |i: usize| {
                    Frame::udp(src, dst, 40000, port)
                        .macs(pair.mac_a, pair.mac_b)
                        .payload(format!("frame {i}").as_bytes())
                };
                vec![
                    base(0).build(),
                    base(1).ipv4_options(&[1, 1, 1]).build(),
                    base(2).pad_to(60).build(),
                ]
            },
            false,
        );
    }

    #[test]
    fn kernel_accepts_built_ipv6_frames() {
        require_root!();
        let src: IpAddr = "2001:db8::1".parse().unwrap();
        let dst: IpAddr = "2001:db8::2".parse().unwrap();
        delivered_by_kernel(
            |pair, port| {
                let base = |i: usize| {
                    Frame::udp(src, dst, 40000, port)
                        .macs(pair.mac_a, pair.mac_b)
                        .payload(format!("frame {i}").as_bytes())
                };
                vec![
                    base(0).build(),
                    base(1)
                        .ipv6_ext(IPV6_HOP_BY_HOP, 8)
                        .ipv6_ext(IPV6_DEST_OPTS, 24)
                        .build(),
                    base(2).ipv6_ext(IPV6_ROUTING, 16).build(),
                    base(3).ipv6_ext(IPV6_DEST_OPTS, 1024).build(),
                    base(4).vlan(0x8100, 0).build(),
                ]
            },
            true,
        );
    }
}
