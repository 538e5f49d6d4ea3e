//! How the store writes its types: serde helpers that keep the on-disk JSON readable (targets,
//! actions, protocols and modes as their usual text, times as RFC 3339 in UTC) and the checksummed
//! framing of one record, `{"crc":<crc32 of the body>,"<key>":<body>}`.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _};

use crate::{Action, Mode, Proto, Scope, Target};

/// First second RFC 3339 cannot write (year 10000).
const TIME_LIMIT_SECS: u64 = 253_402_300_800;

/// RFC 3339 text of `t`, or why it has none (before 1970, after 9999).
pub(super) fn time_text(t: SystemTime) -> Result<String, String> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d < Duration::from_secs(TIME_LIMIT_SECS) => {
            Ok(humantime::format_rfc3339_nanos(t).to_string())
        }
        _ => Err(format!(
            "time {t:?} is outside the years 1970 to 9999 that the store can record"
        )),
    }
}

fn parse_time<E: serde::de::Error>(s: &str) -> Result<SystemTime, E> {
    humantime::parse_rfc3339(s).map_err(|e| E::custom(format!("bad time '{s}': {e}")))
}

/// A `SystemTime` as RFC 3339 text with nanoseconds.
pub(super) mod time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time_text(*t).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        parse_time(&String::deserialize(d)?)
    }
}

/// An optional `SystemTime` as RFC 3339 text or null.
pub(super) mod opt_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&time_text(*t).map_err(S::Error::custom)?),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse_time(&s))
            .transpose()
    }
}

/// A [`Target`] as `192.0.2.7` or `198.51.100.0/24`.
pub(super) mod target {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Target, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// An [`Action`] as `drop` or `observe`.
pub(super) mod action {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Action, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "drop" => Ok(Action::Drop),
            "observe" => Ok(Action::Observe),
            _ => Err(D::Error::custom(format!(
                "unknown action '{text}' (expected drop or observe)"
            ))),
        }
    }
}

/// The text of a [`Mode`].
pub(super) fn mode_text(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Observe => "observe",
    }
}

/// A [`Mode`] as `enforce` or `observe`.
pub(super) mod mode {
    use super::*;

    pub fn serialize<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mode_text(*m))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "enforce" => Ok(Mode::Enforce),
            "observe" => Ok(Mode::Observe),
            _ => Err(D::Error::custom(format!(
                "unknown mode '{text}' (expected enforce or observe)"
            ))),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ScopeText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

/// A [`Scope`] as `{"dst":"203.0.113.5","proto":"tcp","port":443}`, absent parts left out.
pub(super) mod scope {
    use super::*;

    pub fn serialize<S: Serializer>(sc: &Scope, s: S) -> Result<S::Ok, S::Error> {
        ScopeText {
            dst: sc.dst,
            proto: sc.proto.map(|p| p.to_string()),
            port: sc.port,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let t = ScopeText::deserialize(d)?;
        Ok(Scope {
            dst: t.dst,
            proto: t
                .proto
                .map(|p| p.parse::<Proto>())
                .transpose()
                .map_err(D::Error::custom)?,
            port: t.port,
        })
    }
}

/// One framed record: `{"crc":N,"<key>":<body>}` with N the CRC-32 of `body`'s bytes.
pub(super) fn frame(key: &str, body: &str) -> String {
    format!(
        "{{\"crc\":{},\"{key}\":{body}}}",
        crc32fast::hash(body.as_bytes())
    )
}

/// The body of a record written by [`frame`], after checking its framing and checksum.
pub(super) fn unframe<'a>(key: &str, record: &'a str) -> Result<&'a str, String> {
    let not_framed = || format!("not a {{\"crc\":…,\"{key}\":…}} record");
    let rest = record.strip_prefix("{\"crc\":").ok_or_else(not_framed)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (crc, rest) = rest.split_at(digits);
    let stored: u32 = crc.parse().map_err(|_| not_framed())?;
    let body = rest
        .strip_prefix(",\"")
        .and_then(|r| r.strip_prefix(key))
        .and_then(|r| r.strip_prefix("\":"))
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(not_framed)?;
    let computed = crc32fast::hash(body.as_bytes());
    if computed != stored {
        return Err(format!(
            "checksum mismatch (stored {stored}, computed {computed})"
        ));
    }
    Ok(body)
}
