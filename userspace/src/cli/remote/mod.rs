//! Client commands: each is one or two API calls and a rendering of the answer.
//!
//! By command: `status` and `top` in `status`, `block` in `block`, `allow`, `mode` and
//! `rules` in `policy`, `swarms` in `swarms`; here the printers they share.

mod block;
mod policy;
mod status;
mod swarms;

use anyhow::Result;
use serde::Serialize;
use swarmwall::api::{client::Client, types::ChangeResult};

use super::emit;

pub use block::block;
pub use policy::{allow, mode, rules};
pub use status::{status, top};
pub(super) use status::{top_lines, top_query};
pub use swarms::swarms;

/// Prints any API answer as indented JSON.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Fetches a route's raw JSON and prints it: `--json` shows exactly what the daemon said,
/// including fields this CLI doesn't know.
async fn print_raw(client: &Client, path: &str) -> Result<()> {
    let value: serde_json::Value = client.get(path).await?;
    print_json(&value)
}

/// Reports a change: its summary and how to undo it.
fn print_change(r: &ChangeResult, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    if r.change_id == 0 {
        // Nothing was committed (every rule already as asked): nothing to undo.
        return emit(&format!("{}\n", r.summary));
    }
    emit(&format!(
        "{} (change {id}; undo with `swarmwall rules undo {id}`)\n",
        r.summary,
        id = r.change_id
    ))
}
