//! Everything that talks to the kernel's side of swarmwall: the loaded object and its pins
//! ([`dataplane`]), the rule table the maps mirror ([`table`]), its presence bitmaps
//! ([`filter`]) and batched map syscalls.

mod batch;
pub mod dataplane;
pub mod filter;
pub mod table;
