//! Builds the eBPF object with the pinned nightly so that `cargo build` never embeds a stale one:
//! aya-build re-runs whenever anything under `ebpf/` (or `maps/`, a dependency) changes.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The nightly that builds the eBPF crate; pinned together with bpf-linker 0.9.14 and aya.
const NIGHTLY: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "swarmwall-ebpf")
        .ok_or_else(|| anyhow!("swarmwall-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("swarmwall-ebpf manifest has no parent"))?;
    println!("cargo:rerun-if-changed={}", root.join("../maps/src"));
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(NIGHTLY),
    )
    .context(
        "building the eBPF object failed; run `cargo xtask setup` to install the pinned nightly \
         and bpf-linker",
    )
}
