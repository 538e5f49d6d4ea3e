//! Wire types of the control API (`/v1/...`): what the daemon answers and the CLI sends.
//!
//! Times are RFC 3339 strings in UTC; addresses and prefixes are strings in their usual notation;
//! actions are `"drop"` or `"observe"`; modes `"enforce"` or `"observe"`.
//!
//! Requests are strict, answers tolerant. A field the daemon does not know is a 400 naming it
//! (a typo like `ttl` for `ttl_s` must not turn into a permanent rule): the types only requests
//! use say `deny_unknown_fields`, and the server refuses whatever else a request body or query
//! leaves unread, which covers [`ScopeView`] and [`ModeView`], types that answers use too. The
//! answers stay tolerant so that a client can read a newer daemon's answers (new fields are
//! ignored there, and carry `#[serde(default)]` when a client must read an older daemon's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The scope of a rule: which traffic to this host it applies to. All `None`: all traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeView {
    /// Destination address (the site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A rule as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    /// Rule id, stable for the rule's life.
    pub id: u64,
    /// Source address or prefix.
    pub target: String,
    /// `drop` or `observe`.
    pub action: String,
    /// Scope.
    pub scope: ScopeView,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// When it was added.
    pub created_at: String,
    /// Who added it (`uid 0`, `swarmwall`, ...).
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// Packets it decided (dropped or would have dropped).
    pub hits: u64,
    /// Packets it dropped.
    pub dropped: u64,
    /// Bytes it dropped.
    pub dropped_bytes: u64,
    /// Where it is enforced: `xdp` (the kernel program's maps), `nftables` (the firewall
    /// mirror). Empty from a daemon that does not say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforced_by: Vec<String>,
}

impl RuleView {
    /// `swarm` if the detector pushed it, else `admin` (the `origin` of a rules query).
    pub fn origin(&self) -> &'static str {
        if self.actor == crate::daemon::controller::SWARM_ACTOR {
            "swarm"
        } else {
            "admin"
        }
    }
}

/// A rule to add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// Source address or prefix.
    pub target: String,
    /// `drop` (default) or `observe`.
    #[serde(default)]
    pub action: Option<String>,
    /// Scope; default all traffic.
    #[serde(default)]
    pub scope: ScopeView,
    /// Lifetime in seconds; `None` uses the daemon's default TTL (which may be permanent).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/rules`: add one or many rules as one change (one undo reverts them all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRules {
    /// The rules.
    pub rules: Vec<NewRule>,
    /// Why, recorded in the journal.
    #[serde(default)]
    pub reason: Option<String>,
    /// Allow prefixes wider than the configured bound (never `/0`, never allow-listed or own
    /// addresses).
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/rules/delete`: remove rules as one change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRules {
    /// Rule ids to remove.
    #[serde(default)]
    pub ids: Vec<u64>,
    /// Addresses or prefixes: remove every rule whose target is exactly one of them (any action,
    /// any scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Remove every rule instead.
    #[serde(default)]
    pub all: bool,
    /// Required when removing more than one rule.
    #[serde(default)]
    pub yes: bool,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a mutation did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResult {
    /// The journal change id (give it to `undo`).
    pub change_id: u64,
    /// Rule ids added or removed.
    #[serde(default)]
    pub rules: Vec<u64>,
    /// One line for humans.
    pub summary: String,
    /// Rules that existed (same target, action and scope) and got the new expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updated: Vec<u64>,
    /// Rules that existed exactly as asked (same expiry): nothing to change. A request whose
    /// every rule is unchanged commits nothing and answers `change_id` 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<u64>,
}

/// An allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowView {
    /// Address or prefix.
    pub target: String,
    /// When it was added.
    pub created_at: String,
    /// Who added it.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// True if it comes from the config file (not removable through the API).
    #[serde(default)]
    pub from_config: bool,
}

/// `POST /v1/allow` and `POST /v1/allow/delete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRequest {
    /// Address or prefix.
    pub target: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET`/`PUT /v1/mode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeView {
    /// `enforce` or `observe`.
    pub mode: String,
    /// Why (PUT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One journal change, as listed by `GET /v1/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeView {
    /// Change id.
    pub id: u64,
    /// When.
    pub time: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// One line: what changed.
    pub summary: String,
    /// Number of operations (a bulk import is one change of many).
    pub ops: usize,
    /// The change this one undid, if it is an undo.
    pub undoes: Option<u64>,
    /// The change that undid this one, if any.
    pub undone_by: Option<u64>,
}

/// An attached interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceView {
    /// Interface name.
    pub name: String,
    /// `driver` or `generic`.
    pub mode: String,
}

/// Rule counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounts {
    /// Single-address rules.
    pub exact: usize,
    /// Prefix rules.
    pub prefix: usize,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// swarmwall version.
    pub version: String,
    /// Kernel/userspace ABI version of the loaded maps.
    pub abi: u32,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// `enforce` or `observe`.
    pub mode: String,
    /// Attached interfaces.
    pub interfaces: Vec<IfaceView>,
    /// Global counters by name (`seen`, `passed`, `dropped_exact`, ...).
    pub stats: BTreeMap<String, u64>,
    /// Rule counts.
    pub rules: RuleCounts,
    /// Allow-list entries.
    pub allow: usize,
    /// Where the maps and links are pinned.
    pub pin_dir: String,
    /// True if this daemon adopted a data plane left running by an earlier one.
    pub adopted: bool,
    /// What the daemon recovered from at start-up (a torn journal tail, a damaged snapshot,
    /// pinned state it worked around), for the admin to look at.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The host firewall's copy of the rules (`[firewall]`), if one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallView>,
}

/// The host firewall backend, in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallView {
    /// `nftables`.
    pub backend: String,
    /// `mirror`.
    pub role: String,
    /// Where the rules are: `inet swarmwall`.
    pub table: String,
    /// It holds what the store holds (as of the last change or reconcile).
    pub healthy: bool,
    /// What it holds, or why it is unhealthy (the command's error).
    pub detail: String,
    /// Elements it holds: rules and allow entries.
    pub elements: usize,
    /// Differences the last reconcile found between the firewall and the store (someone's
    /// hand, a reboot that lost the table).
    pub drift: usize,
    /// Seconds since the last reconcile.
    pub reconciled_s_ago: Option<u64>,
}

/// `GET /v1/top` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// Sort key: `pps` (default), `bps` or `drops`.
    #[serde(default)]
    pub by: Option<String>,
    /// Window in seconds (default 10).
    #[serde(default)]
    pub window_s: Option<u64>,
    /// How many sources (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One source in `top`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TalkerView {
    /// Source address.
    pub addr: String,
    /// Packets per second over the window.
    pub pps: f64,
    /// Bits per second over the window.
    pub bps: f64,
    /// Dropped packets per second over the window.
    pub drop_pps: f64,
    /// Total packets since first seen.
    pub packets: u64,
    /// Total bytes.
    pub bytes: u64,
    /// Total dropped.
    pub dropped: u64,
    /// Ids of the rules whose target covers this source.
    pub rules: Vec<u64>,
}

/// `GET /v1/top`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopView {
    /// The window the rates are over, in seconds (shorter right after start).
    pub window_s: f64,
    /// Sort key used.
    pub by: String,
    /// Sources tracked in the kernel.
    pub tracked: usize,
    /// The top sources.
    pub sources: Vec<TalkerView>,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The error.
    pub error: ErrorBody,
}

/// Body of an [`ApiError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable: `bad_request`, `not_found`, `conflict`, `forbidden`, `too_large`,
    /// `timeout`, `busy` (too many connections: retry), `internal`.
    pub code: String,
    /// For humans; names the bad value.
    pub message: String,
}

/// A page a swarm hammers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageView {
    /// `Host` of the requests, if they sent one.
    pub host: Option<String>,
    /// Path (query stripped); empty when the swarm was seen in TLS handshakes only.
    pub path: String,
}

/// A rule the policy planned but has not pushed (observe mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedView {
    /// Source address or prefix.
    pub target: String,
    /// Scope: the attacked site.
    pub scope: ScopeView,
    /// Lifetime it would get, seconds.
    pub ttl_s: u64,
}

/// Something the guards kept out of the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedView {
    /// Member, rule or swarm.
    pub target: String,
    /// Why.
    pub why: String,
}

/// A detected swarm: `GET /v1/swarms/{id}`, and each entry of `GET /v1/swarms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwarmView {
    /// Swarm id (rules pushed for it name it in their reason).
    pub id: u64,
    /// The attacked site, `address:port` (the one most members attack).
    pub site: String,
    /// Every address of the site it attacks: one site's IPv4 and IPv6 addresses (or ports)
    /// when its pages carry the same `Host`. Each member's rules are scoped to its own.
    #[serde(default)]
    pub sites: Vec<String>,
    /// What decided it: `requests` (plain HTTP on the wire), `log` (a web server's access
    /// log) or `handshakes` (TLS ClientHellos alone, on an HTTPS site no log covers; its
    /// pages then have an empty path: TLS hides it).
    #[serde(default)]
    pub basis: String,
    /// `blocked` (rules in force), `reported` (observe mode: rules planned, not pushed),
    /// `refused` (the guards stopped every rule), `expired` (its rules ran out) or `detected`.
    pub state: String,
    /// The pages it hammers.
    pub pages: Vec<PageView>,
    /// Member addresses.
    pub members: Vec<String>,
    /// Members that behaved as the swarm at the detector's last tick.
    pub active: usize,
    /// First request of a member to those pages.
    pub onset: String,
    /// When the evidence threshold was met.
    pub detected: String,
    /// When its first rules were in the kernel.
    pub blocked_at: Option<String>,
    /// From the evidence threshold to rules in the kernel, ms.
    pub time_to_block_ms: Option<u64>,
    /// From the swarm's first request (onset) to rules in the kernel, ms: how long the attack
    /// ran unopposed.
    pub onset_to_block_ms: Option<u64>,
    /// Requests per second to its pages at the last tick.
    pub rate_rps: f64,
    /// Requests per second to its pages at its strongest tick, the one its evidence is from.
    #[serde(default)]
    pub peak_rps: f64,
    /// 0..1.
    pub confidence: f64,
    /// Why it is a swarm: the features that decided it.
    pub evidence: Vec<String>,
    /// Ids of its rules in force.
    pub rules: Vec<u64>,
    /// Packets those rules dropped.
    pub dropped: u64,
    /// Rules planned but not pushed (observe mode).
    pub planned: Vec<PlannedView>,
    /// What the guards refused (newest last, at most 100).
    pub refused: Vec<RefusedView>,
    /// Rules pushed over its life (including expired ones).
    pub rules_pushed: usize,
    /// The journal changes that pushed them: `swarmwall rules undo ID` reverts one.
    #[serde(default)]
    pub changes: Vec<u64>,
    /// Share of recent legitimate requests its last plan would have dropped (the impact preview).
    pub impact: f64,
    /// The TLS client fingerprints (JA4) most members open their connections with, most common
    /// first (at most 5); empty when no member's ClientHello was seen (plain HTTP).
    #[serde(default)]
    pub ja4: Vec<Ja4View>,
}

/// One TLS client fingerprint of a swarm's members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ja4View {
    /// The JA4 fingerprint (`t13d1516h2_8daaf6152771_e5627efa2ab1`).
    pub fingerprint: String,
    /// Share of all members (0..1) whose last ClientHello had it.
    pub share: f64,
}

/// The L7 pipeline's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineView {
    /// Whether swarm detection runs (`[swarm] enabled`).
    pub enabled: bool,
    /// Why detection stopped, if one of its threads failed (the daemon keeps enforcing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Samples read from the kernel's ring buffer.
    pub samples: u64,
    /// HTTP requests and TLS hellos parsed from them.
    pub requests: u64,
    /// Samples that parsed to nothing.
    pub unparsed: u64,
    /// Requests dropped because the detector's queue was full.
    pub queue_overflow: u64,
    /// Sources the detector tracks.
    pub tracked_sources: u64,
    /// Samples the kernel skipped to stay within its per-CPU budget.
    pub kernel_skipped: u64,
    /// Samples lost because the ring buffer was full.
    pub kernel_lost: u64,
    /// TLS hellos put together from several samples (a browser's spans two segments).
    #[serde(default)]
    pub hellos_reassembled: u64,
    /// Hellos parsed incomplete because the rest did not come in time.
    #[serde(default)]
    pub hellos_timed_out: u64,
    /// Hellos parsed incomplete because the reassembly's memory cap needed their room.
    #[serde(default)]
    pub hellos_dropped: u64,
    /// The other event sources: access logs (`[[sources.log]]`).
    #[serde(default)]
    pub sources: Vec<SourceView>,
}

/// An event source besides the kernel's ring buffer: an access log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// What it reads (the log's path or pattern).
    pub name: String,
    /// Lines read.
    pub read: u64,
    /// Request events they gave.
    pub requests: u64,
    /// Lines rejected (malformed, oversize, unparsable).
    pub rejected: u64,
    /// Events dropped because the detector's queue was full.
    pub queue_overflow: u64,
    /// What is wrong with it now (e.g. `Permission denied`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Bytes written to the log that the reader has not read yet (absent where it does not
    /// apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_bytes: Option<u64>,
    /// Age of the newest line read, by the time written in it, ms (absent before the first
    /// line): how far behind the requests the detector sees are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_line_age_ms: Option<u64>,
}

/// `GET /v1/swarms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwarmsView {
    /// Swarms, oldest first.
    pub swarms: Vec<SwarmView>,
    /// How the pipeline is doing.
    pub pipeline: PipelineView,
}

/// `GET /v1/rules` query: every filter given must match. Without any, every rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    /// An address or prefix: rules whose target overlaps it (equals it, covers it, or lies
    /// inside it): every rule that can decide a packet from it, and every rule inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `swarm` (rules the detector pushed) or `admin` (rules added through the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Who added the rule: a uid (`0` matches `uid 0` with any pid) or an actor name as listed
    /// (`swarmwall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// One rule of a [`RulesPreview`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewItem {
    /// Source address or prefix.
    pub target: String,
    /// The existing rule (updated or unchanged); `None` for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The expiry it would have.
    pub expires_at: Option<String>,
    /// The expiry it has now (updated rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<String>,
}

/// `POST /v1/rules/preview`: what `POST /v1/rules` with the same body would do; changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesPreview {
    /// New rules.
    pub added: Vec<PreviewItem>,
    /// Existing rules that would get a new expiry.
    pub updated: Vec<PreviewItem>,
    /// Existing rules already as asked, and repeats within the request.
    pub unchanged: Vec<PreviewItem>,
    /// Rules the guards or validation refuse, with why (any refusal fails the real request).
    pub refused: Vec<RefusedView>,
}

/// `GET /v1/verdict` query: a packet to decide. Fields left out match no rule scoped on them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictQuery {
    /// Source address.
    pub src: String,
    /// Destination address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination port (TCP or UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `GET /v1/verdict`: what the kernel would do with that packet now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictView {
    /// `drop` or `pass`.
    pub action: String,
    /// The kernel counter it lands in: `allowed`, `dropped_exact`, `dropped_prefix`,
    /// `observed` or `passed`.
    pub outcome: String,
    /// The global mode it was decided in.
    pub mode: String,
    /// The allow entry that passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<String>,
    /// The deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleView>,
    /// `exact` or `prefix`: which lookup found the deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Ids of every rule whose hit counters the packet would move.
    pub counted: Vec<u64>,
    /// In observe mode: what enforce mode would do (`drop` or `pass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_enforce_mode: Option<String>,
    /// Rules for this source whose scope does not match this packet.
    pub unmatched: Vec<RuleView>,
}

/// `POST /v1/swarms/{id}/pardon`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PardonRequest {
    /// Member addresses (or prefixes) to pardon; empty: every member.
    #[serde(default)]
    pub members: Vec<String>,
    /// Why, recorded in the journal.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a pardon did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PardonResult {
    /// The swarm.
    pub swarm: u64,
    /// The journal change that removed its rules; `None` if none was in force.
    pub change_id: Option<u64>,
    /// The rules removed.
    pub rules: Vec<u64>,
    /// The members pardoned: the swarm pushes no rule for them again.
    pub members: Vec<String>,
    /// Planned rules (observe mode) dropped.
    pub planned_dropped: usize,
    /// One line for humans.
    pub summary: String,
}
