//! Attaching to interfaces, pinning the links, detaching.

use std::path::{Path, PathBuf};

use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};
use swarmwall_maps::programs;

use super::{
    AttachMode, Dataplane, DataplaneError,
    pins::{link_pin, pin_err},
    program_err,
};

/// How the data plane holds one interface's XDP link.
enum LinkHandle {
    /// Owned by the program object: detached when it is dropped, unless also pinned.
    Owned(XdpLinkId),
    /// Pinned in bpffs: survives this process; detached only by unpinning.
    Pinned(PinnedLink),
}

/// One attached interface.
pub(super) struct Attachment {
    iface: String,
    mode: XdpMode,
    handle: LinkHandle,
    /// Pin file of the link, if pinned (also for an adopted link held as `Owned`).
    pin: Option<PathBuf>,
}

/// The index of interface `iface` in this network namespace: what a start checks for every
/// configured interface before it creates anything.
pub fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    nix::net::if_::if_nametoindex(iface).map_err(|_| DataplaneError::NoInterface {
        iface: iface.to_owned(),
    })
}

impl Dataplane {
    /// Attaches the data plane to an interface; returns the mode it got. With pins, an interface
    /// that already has a pinned swarmwall link gets the new program swapped in atomically (no
    /// moment without XDP), keeping the link's mode; a new link is pinned.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<XdpMode, DataplaneError> {
        if let Some(dir) = self.pin_dir.clone() {
            for m in [XdpMode::Driver, XdpMode::Skb] {
                let path = link_pin(&dir, iface, m);
                if !path.exists() {
                    continue;
                }
                let pinned = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Pins {
                    dir: dir.display().to_string(),
                    problem: format!("cannot open pinned link {}: {e}", path.display()),
                })?;
                let link =
                    XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataplaneError::Pins {
                        dir: dir.display().to_string(),
                        problem: format!("{} is not an XDP link: {e}", path.display()),
                    })?;
                let id = self
                    .xdp(programs::XDP)?
                    .attach_to_link(link)
                    .map_err(|source| program_err(programs::XDP, source))?;
                self.links.push(Attachment {
                    iface: iface.to_owned(),
                    mode: m,
                    handle: LinkHandle::Owned(id),
                    pin: Some(path),
                });
                return Ok(m);
            }
        }
        self.attach_fresh(iface, mode)
    }

    /// Pins the links of fresh attachments (with a pin directory), so they outlive this process.
    /// Separate from [`Dataplane::attach`] because attaching may happen on a thread that entered
    /// another network namespace, while pins belong to this process's BPF filesystem.
    pub fn pin_links(&mut self) -> Result<(), DataplaneError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        let links = std::mem::take(&mut self.links);
        let mut result = Ok(());
        for mut a in links {
            if a.pin.is_some() || result.is_err() {
                self.links.push(a);
                continue;
            }
            let path = link_pin(&dir, &a.iface, a.mode);
            a.handle = match a.handle {
                LinkHandle::Owned(id) => match self.pin_one(&dir, &a.iface, id, &path) {
                    Ok(pinned) => {
                        a.pin = Some(path);
                        LinkHandle::Pinned(pinned)
                    }
                    Err(e) => {
                        // The link went with take_link; it stays attached until we exit.
                        result = Err(e);
                        continue;
                    }
                },
                pinned => pinned,
            };
            self.links.push(a);
        }
        result
    }

    fn pin_one(
        &mut self,
        dir: &Path,
        iface: &str,
        id: XdpLinkId,
        path: &Path,
    ) -> Result<PinnedLink, DataplaneError> {
        let link = self
            .xdp(programs::XDP)?
            .take_link(id)
            .map_err(|source| program_err(programs::XDP, source))?;
        let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Pins {
            dir: dir.display().to_string(),
            problem: format!(
                "kernel gave no bpf_link for {iface} ({e}); Linux 5.9+ is needed to pin"
            ),
        })?;
        fd.pin(path).map_err(|e| DataplaneError::Pins {
            dir: dir.display().to_string(),
            problem: format!("pinning {}: {e:?}", path.display()),
        })
    }

    fn attach_fresh(&mut self, iface: &str, mode: AttachMode) -> Result<XdpMode, DataplaneError> {
        let tries: &[XdpMode] = match mode {
            AttachMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
            AttachMode::Driver => &[XdpMode::Driver],
            AttachMode::Generic => &[XdpMode::Skb],
        };
        let prog = self.xdp(programs::XDP)?;
        let mut last = None;
        for m in tries {
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if mode == AttachMode::Auto && *m == XdpMode::Skb {
                        tracing::warn!(
                            iface,
                            "driver refused native XDP; attached in generic (skb) mode, which is slower"
                        );
                    }
                    self.links.push(Attachment {
                        iface: iface.to_owned(),
                        mode: *m,
                        handle: LinkHandle::Owned(id),
                        pin: None,
                    });
                    return Ok(*m);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(DataplaneError::Attach {
            iface: iface.to_owned(),
            source: Box::new(last.expect("at least one mode tried")),
        })
    }

    /// Interfaces attached to, with their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, XdpMode)> {
        self.links.iter().map(|a| (a.iface.as_str(), a.mode))
    }

    /// Detaches from every interface, pinned or not. Maps stay pinned; see [`remove_pins`].
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let links = std::mem::take(&mut self.links);
        for a in links {
            if let Some(pin) = &a.pin {
                match std::fs::remove_file(pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(pin_err("removing", pin)(e)),
                }
            }
            match a.handle {
                LinkHandle::Owned(id) => self
                    .xdp(programs::XDP)?
                    .detach(id)
                    .map_err(|source| program_err(programs::XDP, source))?,
                // With the pin gone, dropping the last fd detaches.
                LinkHandle::Pinned(p) => drop(FdLink::from(p)),
            }
        }
        Ok(())
    }
}
