//! `[[sources.log]]`: one access log (or a glob of them) the daemon reads request events from.
//!
//! ```toml
//! [[sources.log]]
//! path = "/var/log/nginx/shop.access.log*"
//! format = "combined"            # common, json, or an nginx log_format string
//! site = ["203.0.113.10:443", "[2001:db8::10]:443"]
//! trusted_proxies = ["10.0.0.0/8"]
//! ```
//!
//! Only the types, their parsing and their validation live here; the daemon's config owns the
//! `sources` table.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::format::{Format, FormatError, JsonFields, LineParser};

/// One `[[sources.log]]` entry, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceConfig {
    /// The log file; glob patterns (`*`, `?`, `[...]`) match several, including files that
    /// appear later.
    pub path: String,
    /// `combined` (the default), `common`, `json`, or an nginx `log_format` string.
    #[serde(default = "default_format")]
    pub format: String,
    /// Key names of a `json` log (only with `format = "json"`).
    #[serde(default)]
    pub fields: Option<JsonFields>,
    /// The site (`ADDR:PORT`) the log's requests went to; several for a site with IPv4 and IPv6
    /// addresses (a line goes to the first of its client's family). Required unless the format
    /// has `$server_addr`.
    #[serde(default)]
    pub site: Vec<SocketAddr>,
    /// Reverse proxies and CDNs (CIDRs): a line from one of them takes its client from
    /// `X-Forwarded-For` (the right-most address that is not itself a trusted proxy).
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<IpNet>,
}

/// CIDRs or single addresses (a host route), each parsed with its own error.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not an address or CIDR prefix (e.g. 10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

fn default_format() -> String {
    "combined".into()
}

/// A `[[sources.log]]` entry that cannot be used; each names the key at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogConfigError {
    /// `path` is empty or not a valid glob.
    #[error("sources.log path {path:?}: {why}")]
    Path {
        /// The value.
        path: String,
        /// Why.
        why: String,
    },
    /// `format` does not compile.
    #[error("sources.log {path:?} format: {source}")]
    Format {
        /// The entry's path.
        path: String,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// `fields` given for a format that is not `json`.
    #[error("sources.log {path:?}: fields is only for format = \"json\", not {format:?}")]
    FieldsWithoutJson {
        /// The entry's path.
        path: String,
        /// The format.
        format: String,
    },
    /// No `site`, and the format does not name one per line.
    #[error(
        "sources.log {path:?}: site is required (ADDR:PORT the log's requests went to), as format {format:?} has no $server_addr"
    )]
    NoSite {
        /// The entry's path.
        path: String,
        /// The format.
        format: String,
    },
    /// A `site` with port 0 or an unspecified address cannot scope a rule.
    #[error("sources.log {path:?}: site {site} is not an address and port a rule can be scoped to")]
    BadSite {
        /// The entry's path.
        path: String,
        /// The value.
        site: SocketAddr,
    },
}

impl LogSourceConfig {
    /// Checks the entry and compiles its format into a [`LineParser`].
    pub fn validate(&self) -> Result<LineParser, LogConfigError> {
        if self.path.trim().is_empty() {
            return Err(LogConfigError::Path {
                path: self.path.clone(),
                why: "empty".into(),
            });
        }
        glob::Pattern::new(&self.path).map_err(|e| LogConfigError::Path {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let format = Format::parse(&self.format, self.fields.clone()).map_err(|source| {
            LogConfigError::Format {
                path: self.path.clone(),
                source,
            }
        })?;
        if self.fields.is_some() && !format.is_json() {
            return Err(LogConfigError::FieldsWithoutJson {
                path: self.path.clone(),
                format: self.format.clone(),
            });
        }
        if self.site.is_empty() && !format.has_server_addr() {
            return Err(LogConfigError::NoSite {
                path: self.path.clone(),
                format: self.format.clone(),
            });
        }
        if let Some(&site) = self
            .site
            .iter()
            .find(|s| s.port() == 0 || s.ip().is_unspecified())
        {
            return Err(LogConfigError::BadSite {
                path: self.path.clone(),
                site,
            });
        }
        Ok(LineParser::new(
            format,
            self.site.clone(),
            self.trusted_proxies.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sources {
        log: Vec<LogSourceConfig>,
    }

    #[derive(Deserialize)]
    struct Doc {
        sources: Sources,
    }

    fn parse(text: &str) -> Result<Vec<LogSourceConfig>, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.sources.log)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_entry_parses_and_validates() {
        let v = parse(
            r#"
            [[sources.log]]
            path = "/var/log/nginx/*.access.log"
            site = ["203.0.113.10:443", "[2001:db8::10]:443"]
            trusted_proxies = ["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.1"]

            [[sources.log]]
            path = "/var/log/app.json"
            format = "json"
            fields = { remote_addr = "client", time = "ts" }
            site = ["203.0.113.20:80"]

            [[sources.log]]
            path = "/var/log/nginx/multi.log"
            format = '$remote_addr [$time_local] "$request" $status $server_addr:$server_port'
            "#,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].format, "combined");
        assert_eq!(v[0].site.len(), 2);
        assert_eq!(v[0].trusted_proxies[0].to_string(), "10.0.0.0/8");
        assert_eq!(v[0].trusted_proxies[2].to_string(), "192.0.2.1/32");
        let fields = v[1].fields.clone().unwrap();
        assert_eq!(fields.remote_addr, "client");
        assert_eq!(fields.time, "ts");
        assert_eq!(fields.status, "status", "unnamed fields keep their default");
        for e in &v {
            e.validate().unwrap();
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = parse("[[sources.log]]\npath = \"/x\"\nsites = [\"1.2.3.4:80\"]\n").unwrap_err();
        assert!(e.contains("sites"), "{e}");
        let e = parse(
            "[[sources.log]]\npath = \"/x\"\nformat = \"json\"\nfields = { clinet = \"c\" }\n",
        )
        .unwrap_err();
        assert!(e.contains("clinet"), "{e}");
        let e =
            parse("[[sources.log]]\npath = \"/x\"\nsite = [\"shop.example:80\"]\n").unwrap_err();
        assert!(e.contains("site"), "{e}");
        let e = parse("[[sources.log]]\npath = \"/x\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
            .unwrap_err();
        assert!(
            e.contains("trusted_proxies") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        let e = parse("[[sources.log]]\nformat = \"common\"\n").unwrap_err();
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let base = LogSourceConfig {
            path: "/var/log/nginx/access.log".into(),
            format: "combined".into(),
            fields: None,
            site: vec!["203.0.113.10:80".parse().unwrap()],
            trusted_proxies: Vec::new(),
        };
        base.validate().unwrap();
        let msg = |c: LogSourceConfig| c.validate().unwrap_err().to_string();
        let m = msg(LogSourceConfig {
            site: Vec::new(),
            ..base.clone()
        });
        assert!(m.contains("site is required"), "{m}");
        let m = msg(LogSourceConfig {
            site: vec!["0.0.0.0:80".parse().unwrap()],
            ..base.clone()
        });
        assert!(m.contains("site 0.0.0.0:80"), "{m}");
        let m = msg(LogSourceConfig {
            fields: Some(JsonFields::default()),
            ..base.clone()
        });
        assert!(m.contains("fields is only for format = \"json\""), "{m}");
        let m = msg(LogSourceConfig {
            format: "$remote_addr $request".into(),
            ..base.clone()
        });
        assert!(m.contains("format") && m.contains("time"), "{m}");
        let m = msg(LogSourceConfig {
            format: "$remote_addr$time_local \"$request\"".into(),
            ..base.clone()
        });
        assert!(m.contains("$remote_addr and $time_local"), "{m}");
        let m = msg(LogSourceConfig {
            path: "/var/log/[".into(),
            ..base.clone()
        });
        assert!(m.contains("path \"/var/log/[\""), "{m}");
        // A format carrying the server's address needs no site.
        LogSourceConfig {
            format: "$server_addr $server_port $remote_addr [$time_local] \"$request\"".into(),
            site: Vec::new(),
            ..base
        }
        .validate()
        .unwrap();
    }
}
