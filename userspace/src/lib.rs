//! swarmwall: an XDP traffic monitor and blocker.
//!
//! The library half: the kernel ABI lives in [`swarmwall_maps`]; this crate loads the eBPF object
//! ([`dataplane`]), models rules ([`rules`], [`table`]) and parses addresses ([`addr`]).

pub mod addr;
pub mod analyze;
pub mod api;
pub mod backend;
pub mod daemon;
pub mod detect;
pub mod firewall;
pub mod guard;
pub mod kernel;
pub mod l7;
pub mod metrics;
pub mod policy;
pub mod rules;
pub mod sources;
pub mod store;
pub mod verdict;

// The kernel modules keep their old paths (`swarmwall::dataplane::…`), which tests, benches and
// xtask use.
pub use kernel::{dataplane, filter, table};

pub use addr::{AddrError, Target};
pub use dataplane::{
    AttachMode, Dataplane, DataplaneError, Mode, Prog, RuleInfo, Sizes, SourceStats,
};
pub use rules::{Action, Proto, RuleError, RuleId, RuleSpec, Scope};
