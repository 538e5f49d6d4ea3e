//! Human output: aligned tables, relative times, compact numbers. Pure functions of their inputs
//! (the clock is a parameter), so they are unit-tested.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use swarmwall::api::types::ScopeView;

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table printed with columns padded to their widest cell, two spaces apart. The last column
/// is never padded (it holds free text such as a reason).
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as lines, without trailing newlines.
    pub fn lines(&self) -> Vec<String> {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = width[i].saturating_sub(cell.chars().count());
                let last = i + 1 == n;
                match self.align[i] {
                    Align::Right => {
                        s.extend(std::iter::repeat_n(' ', pad));
                        s.push_str(cell);
                    }
                    Align::Left => {
                        s.push_str(cell);
                        if !last {
                            s.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            s.trim_end().to_string()
        };
        let mut out = vec![line(&mut self.headers.iter().copied())];
        for row in &self.rows {
            out.push(line(&mut row.iter().map(String::as_str)));
        }
        out
    }

    /// The table as text, one line each, newline-terminated.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in self.lines() {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

/// `9m58s`, `3s`, `2h5m`, `3d4h`: the two largest units.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) if secs == 0 => format!("{mins}m"),
        (0, 0, _) => format!("{mins}m{secs}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h{mins}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d{hours}h"),
    }
}

/// Parses the API's RFC 3339 UTC times.
pub fn parse_time(t: &str) -> Option<SystemTime> {
    let t = t.trim();
    let t = t
        .strip_suffix("+00:00")
        .map_or_else(|| t.to_string(), |s| format!("{s}Z"));
    humantime::parse_rfc3339_weak(&t).ok()
}

/// `in 9m58s`, `3s ago` or `now`; the text itself if it isn't a time.
pub fn relative(t: &str, now: SystemTime) -> String {
    let Some(at) = parse_time(t) else {
        return t.to_string();
    };
    match at.duration_since(now) {
        Ok(ahead) if ahead >= Duration::from_secs(1) => format!("in {}", short_duration(ahead)),
        Ok(_) => "now".into(),
        Err(e) if e.duration() < Duration::from_secs(1) => "now".into(),
        Err(e) => format!("{} ago", short_duration(e.duration())),
    }
}

/// A rule's expiry: `never`, `expired` or `in 9m58s`.
pub fn expiry(t: Option<&str>, now: SystemTime) -> String {
    match t {
        None => "never".into(),
        Some(t) => match parse_time(t) {
            Some(at) if at <= now => "expired".into(),
            _ => relative(t, now),
        },
    }
}

/// `all`, `203.0.113.5`, `tcp/443`, `203.0.113.5 port 443`, ...
pub fn scope(s: &ScopeView) -> String {
    let mut parts = Vec::new();
    if let Some(dst) = &s.dst {
        parts.push(dst.clone());
    }
    match (&s.proto, s.port) {
        (Some(p), Some(port)) => parts.push(format!("{p}/{port}")),
        (Some(p), None) => parts.push(p.clone()),
        (None, Some(port)) => parts.push(format!("port {port}")),
        (None, None) => {}
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

/// A compact number: `950`, `1.2k`, `34M`, `5.6G`.
pub fn si(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let units = ["", "k", "M", "G", "T", "P"];
    let mut v = x;
    let mut i = 0;
    while v.abs() >= 999.5 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        if v.fract().abs() < 1e-9 || v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    } else if v.abs() < 9.95 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

/// [`si`] for counters.
pub fn si_u64(x: u64) -> String {
    si(x as f64)
}

/// An optional text, `-` when absent or empty.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".into(),
    }
}

/// Cuts a line to `width` characters.
pub fn truncate(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn durations() {
        let d = Duration::from_secs;
        assert_eq!(short_duration(d(0)), "0s");
        assert_eq!(short_duration(d(3)), "3s");
        assert_eq!(short_duration(d(598)), "9m58s");
        assert_eq!(short_duration(d(600)), "10m");
        assert_eq!(short_duration(d(3600)), "1h");
        assert_eq!(short_duration(d(3600 + 5 * 60 + 7)), "1h5m");
        assert_eq!(short_duration(d(86_400 * 3 + 3600 * 4 + 9)), "3d4h");
        assert_eq!(short_duration(d(86_400 * 2 + 59)), "2d");
    }

    #[test]
    fn relative_times() {
        let now = at("2026-05-20T12:00:00Z");
        assert_eq!(relative("2026-05-20T12:09:58Z", now), "in 9m58s");
        assert_eq!(relative("2026-05-20T11:59:57Z", now), "3s ago");
        assert_eq!(relative("2026-05-20T12:00:00.400Z", now), "now");
        assert_eq!(relative("2026-05-20T11:00:00+00:00", now), "1h ago");
        assert_eq!(relative("yesterday", now), "yesterday");
        assert_eq!(expiry(None, now), "never");
        assert_eq!(expiry(Some("2026-05-20T11:00:00Z"), now), "expired");
        assert_eq!(expiry(Some("2026-05-20T12:00:30Z"), now), "in 30s");
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&ScopeView::default()), "all");
        let s = ScopeView {
            dst: Some("203.0.113.5".into()),
            proto: Some("tcp".into()),
            port: Some(443),
        };
        assert_eq!(scope(&s), "203.0.113.5 tcp/443");
        let s = ScopeView {
            port: Some(80),
            ..Default::default()
        };
        assert_eq!(scope(&s), "port 80");
    }

    #[test]
    fn numbers() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(2.5), "2.5");
        assert_eq!(si(1234.0), "1.2k");
        assert_eq!(si(999_999.0), "1.0M");
        assert_eq!(si(34_000_000.0), "34M");
        assert_eq!(si(f64::NAN), "-");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("TARGET", Align::Left),
            ("REASON", Align::Left),
        ]);
        t.row(vec!["7".into(), "192.0.2.7".into(), "-".into()]);
        t.row(vec![
            "12".into(),
            "2001:db8::/32".into(),
            "a long reason".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID  TARGET         REASON\n 7  192.0.2.7      -\n12  2001:db8::/32  a long reason\n"
        );
    }
}
