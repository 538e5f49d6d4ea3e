//! swarmwall: an XDP traffic monitor and blocker.
//!
//! The library half: the kernel ABI lives in [`swarmwall_maps`]; this crate loads the eBPF object
//! ([`dataplane`]), models rules ([`rules`], [`table`]) and parses addresses ([`addr`]).

pub mod addr;
pub mod analyze;
pub mod api;
mod batch;
pub mod daemon;
pub mod dataplane;
pub mod detect;
pub mod filter;
pub mod l7;
pub mod policy;
pub mod rules;
pub mod store;
pub mod table;
pub mod verdict;

pub use addr::{AddrError, Target};
pub use dataplane::{
    AttachMode, Dataplane, DataplaneError, Mode, Prog, RuleInfo, Sizes, SourceStats,
};
pub use rules::{Action, Proto, RuleError, RuleId, RuleSpec, Scope};
