//! Helpers shared by the kernel test binaries (each includes this with `mod common;`). They live
//! here, not in the `swarmwall-integration` library, because they name `swarmwall` types and the
//! library must build without the eBPF toolchain.

use std::net::IpAddr;

use swarmwall::Sizes;

/// Parses a literal address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Map sizes small enough that a test loads the program in well under a second.
pub fn small() -> Sizes {
    Sizes {
        sources: 4096,
        exact: 1024,
        prefix: 1024,
        allow: 64,
        rules: 2048,
        cache: 1024,
    }
}
