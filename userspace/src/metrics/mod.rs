//! Prometheus metrics: `GET /metrics` on a TCP listener of the admin's choosing (`[metrics]`),
//! off by default.
//!
//! Each scrape renders a fresh registry from the same views the control API serves (status,
//! swarms, rules), so the figures cannot drift from what `swarmwall status` shows and nothing
//! is kept in step between scrapes. The kernel's counters are monotonic and become counters;
//! what the rules in force hold (their hits go when a rule goes) are gauges.

mod render;
mod serve;

pub use render::{Snapshot, classic, render};
pub use serve::{CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, serve};
