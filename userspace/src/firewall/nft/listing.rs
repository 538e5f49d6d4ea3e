//! What swarmwall's table holds, read from `nft -j list table` (libnftables-json(5)).
//!
//! Only sets whose names swarmwall makes ([`Shape::parse`]) are read; anything else in the
//! table (a set or chain an admin added) is left alone. An element this cannot read is an
//! error naming it, never a silent drop: a reconcile acting on a misread listing would delete
//! what it did not understand.

use std::{collections::BTreeMap, net::IpAddr};

use serde_json::Value;

use super::shape::{Elem, Shape};

/// What the kernel holds of one element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Seconds left before the kernel expires it; `None`: it never expires.
    pub expires_s: Option<u64>,
    /// Packets its counter saw.
    pub packets: u64,
    /// Bytes its counter saw.
    pub bytes: u64,
}

/// The table as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The sets of swarmwall's shapes it has (some may be empty).
    pub sets: Vec<Shape>,
    /// Their elements.
    pub elems: BTreeMap<Elem, Held>,
    /// Chains by name, with how many rules each has (chains are rewritten whole, never
    /// diffed).
    pub chains: BTreeMap<String, usize>,
}

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading nft's listing: {0}")]
pub struct ListingError(String);

fn bad(what: impl Into<String>) -> ListingError {
    ListingError(what.into())
}

/// Reads `json`, the output of `nft -j list table inet TABLE`.
pub fn parse(json: &str, table: &str) -> Result<Listing, ListingError> {
    let v: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array"))?;
    let mut out = Listing::default();
    for item in items {
        if let Some(set) = item.get("set") {
            if set.get("table").and_then(Value::as_str) != Some(table) {
                continue;
            }
            let name = set
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a set without a name"))?;
            let Some(shape) = Shape::parse(name) else {
                continue;
            };
            out.sets.push(shape);
            for e in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (elem, held) =
                    element(shape, e).map_err(|m| bad(format!("set {name}: {m}")))?;
                out.elems.insert(elem, held);
            }
        } else if let Some(chain) = item.get("chain") {
            if chain.get("table").and_then(Value::as_str) == Some(table)
                && let Some(name) = chain.get("name").and_then(Value::as_str)
            {
                out.chains.entry(name.to_owned()).or_default();
            }
        } else if let Some(rule) = item.get("rule")
            && rule.get("table").and_then(Value::as_str) == Some(table)
            && let Some(name) = rule.get("chain").and_then(Value::as_str)
        {
            *out.chains.entry(name.to_owned()).or_default() += 1;
        }
    }
    Ok(out)
}

/// One element: either its bare value or `{"elem": {"val": .., "timeout": .., "expires": ..,
/// "counter": {..}}}`.
fn element(shape: Shape, e: &Value) -> Result<(Elem, Held), String> {
    let (val, meta) = match e.get("elem") {
        Some(m) => (m.get("val").ok_or("an element without a value")?, Some(m)),
        None => (e, None),
    };
    let parts: Vec<&Value> = match val.get("concat") {
        Some(c) => c
            .as_array()
            .ok_or("a concatenation that is not an array")?
            .iter()
            .collect(),
        None => vec![val],
    };
    let want = 1 + usize::from(shape.dst) + usize::from(shape.proto) + usize::from(shape.port);
    if parts.len() != want {
        return Err(format!("{val}: {} parts, expected {want}", parts.len()));
    }
    let mut parts = parts.into_iter();
    let mut next = || parts.next().expect("counted above");
    let src = addr(next())?;
    let dst = shape.dst.then(|| addr(next())).transpose()?;
    let proto = shape.proto.then(|| proto(next())).transpose()?;
    let port = shape.port.then(|| port(next())).transpose()?;
    let family_ok = src.is_ipv6() == shape.v6 && dst.is_none_or(|d| d.is_ipv6() == shape.v6);
    if !family_ok {
        return Err(format!("{val}: an address of the other family"));
    }
    let counter = meta.and_then(|m| m.get("counter"));
    let num = |v: Option<&Value>, k: &str| v.and_then(|c| c.get(k)).and_then(Value::as_u64);
    let held = Held {
        expires_s: num(meta, "expires").or(num(meta, "timeout")),
        packets: num(counter, "packets").unwrap_or(0),
        bytes: num(counter, "bytes").unwrap_or(0),
    };
    Ok((
        Elem {
            shape,
            src,
            dst,
            proto,
            port,
        },
        held,
    ))
}

fn addr(v: &Value) -> Result<IpAddr, String> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{v}: not an address"))
}

/// nft names the protocols it knows (`tcp`, `ipv6-icmp`) and numbers the others.
fn proto(v: &Value) -> Result<u8, String> {
    if let Some(n) = v.as_u64() {
        return u8::try_from(n).map_err(|_| format!("{v}: not a protocol"));
    }
    match v.as_str() {
        Some("tcp") => Ok(6),
        Some("udp") => Ok(17),
        Some("icmp") => Ok(1),
        Some("ipv6-icmp" | "icmpv6") => Ok(58),
        Some(s) => s.parse().map_err(|_| format!("{v}: an unknown protocol")),
        None => Err(format!("{v}: not a protocol")),
    }
}

fn port(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{v}: not a port number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nft 1.0.6 printed for a table with a scoped set (`nft -j list table inet
    /// swarmwall`), and a set and rule of somebody else's.
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "swarmwall", "handle": 1}},
      {"set": {"family": "inet", "name": "drop_v4_32_dst_proto_port", "table": "swarmwall", "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["192.0.2.1", "203.0.113.10", "tcp", 80]}, "timeout": 3600, "expires": 3599, "counter": {"packets": 7, "bytes": 420}}}], "stmt": [{"counter": null}]}},
      {"set": {"family": "inet", "name": "allow_v4_32", "table": "swarmwall", "type": "ipv4_addr", "handle": 4, "flags": ["timeout"], "elem": ["10.1.2.3"]}},
      {"set": {"family": "inet", "name": "admins_own", "table": "swarmwall", "type": "ipv4_addr", "handle": 5, "elem": ["10.9.9.9"]}},
      {"chain": {"family": "inet", "table": "swarmwall", "name": "rules", "handle": 6}},
      {"rule": {"family": "inet", "table": "swarmwall", "chain": "rules", "handle": 7, "expr": []}}
    ]}"#;

    #[test]
    fn reads_elements_with_their_scope_expiry_and_counters_and_skips_foreign_sets() {
        let l = parse(LISTED, "swarmwall").unwrap();
        assert_eq!(l.sets.len(), 2, "admins_own is not ours");
        let (e, h) = l.elems.iter().find(|(e, _)| e.port.is_some()).unwrap();
        assert_eq!(e.to_string(), "192.0.2.1 . 203.0.113.10 . 6 . 80");
        assert_eq!(
            *h,
            Held {
                expires_s: Some(3599),
                packets: 7,
                bytes: 420
            }
        );
        let (a, h) = l.elems.iter().find(|(e, _)| e.port.is_none()).unwrap();
        assert_eq!(a.src.to_string(), "10.1.2.3");
        assert_eq!(h.expires_s, None, "a bare element never expires");
        assert_eq!(l.chains.get("rules"), Some(&1));
    }

    #[test]
    fn garbage_is_an_error_that_names_it_not_a_panic() {
        for (json, says) in [
            ("", "not JSON"),
            ("{}", "no \"nftables\""),
            (
                r#"{"nftables":[{"set":{"table":"swarmwall","name":"drop_v4_32","elem":["banana"]}}]}"#,
                "banana",
            ),
            (
                r#"{"nftables":[{"set":{"table":"swarmwall","name":"drop_v4_32_port","elem":[{"elem":{"val":{"concat":["192.0.2.1",70000]}}}]}}]}"#,
                "70000",
            ),
            (
                r#"{"nftables":[{"set":{"table":"swarmwall","name":"drop_v4_32","elem":["2001:db8::1"]}}]}"#,
                "other family",
            ),
            (
                r#"{"nftables":[{"set":{"table":"swarmwall","name":"drop_v4_32_dst","elem":[{"elem":{"val":{"concat":["192.0.2.1"]}}}]}}]}"#,
                "expected 2",
            ),
        ] {
            let e = parse(json, "swarmwall").unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
