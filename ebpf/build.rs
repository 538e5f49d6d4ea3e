//! Link-time code generation options for the BPF object, passed to bpf-linker.
//!
//! aya-build sets the compiler flags itself, so these go through the build script, which it
//! leaves alone:
//! - `+allows-misaligned-mem-access`: packet headers sit at 2-byte offsets; without this LLVM
//!   splits every multi-byte read of them into single-byte loads. The kernel allows misaligned
//!   packet access on every architecture with efficient unaligned access (x86-64, arm64).
fn main() {
    println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
    println!("cargo:rerun-if-changed=build.rs");
}
