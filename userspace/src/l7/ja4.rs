//! JA4, the TLS client fingerprint of FoxIO (the BSD-3-Clause licensed client method only),
//! written from its public specification (`technical_details/JA4.md` of FoxIO-LLC/ja4).
//!
//! `t13d1516h2_8daaf6152771_e5627efa2ab1` reads:
//! - `t`: TLS over TCP (the only transport sampled here; QUIC would be `q`, DTLS `d`);
//! - `13`: the highest non-GREASE `supported_versions` entry, else `legacy_version`;
//! - `d`: a `server_name` extension is present (`i`: none, the client dialled an address);
//! - `15`, `16`: cipher suites and extensions, GREASE excluded, capped at 99;
//! - `h2`: first and last character of the first ALPN protocol (`00` without one; the first and
//!   last hex digit of its bytes when either end is not ASCII alphanumeric);
//! - the first 12 hex digits of the SHA-256 of the sorted cipher suites (4 hex digits each,
//!   comma-separated), and of the sorted extensions without SNI and ALPN followed by `_` and the
//!   signature algorithms in their original order. An empty list hashes to `000000000000`.
//!
//! GREASE values (RFC 8701) are ignored everywhere: in suites, extensions, versions and
//! signature algorithms.

use std::fmt::{self, Write as _};

use sha2::{Digest as _, Sha256};

use super::{
    hello::{ClientHello, EXT_ALPN, EXT_SUPPORTED_VERSIONS, is_grease},
    tls::EXT_SERVER_NAME,
};

/// Length of a JA4 fingerprint: `a` (10) `_` `b` (12) `_` `c` (12).
pub const LEN: usize = 36;

/// What an empty list hashes to: the spec wants an empty field to be visible as such.
const EMPTY_HASH: &str = "000000000000";

/// The JA4 fingerprint of `hello`, as a string of [`LEN`] characters.
pub fn ja4(hello: &ClientHello) -> String {
    let p = Parts::of(hello);
    format!("{}_{}_{}", p.a, hash12(&p.ciphers), hash12(&p.exts_sigs))
}

/// The raw, sorted form (`JA4_r`): the lists that [`ja4`] hashes, unhashed. For debugging a
/// fingerprint that differs from another tool's.
pub fn ja4_raw(hello: &ClientHello) -> String {
    let p = Parts::of(hello);
    format!("{}_{}_{}", p.a, p.ciphers, p.exts_sigs)
}

/// The three parts before hashing.
struct Parts {
    a: String,
    ciphers: String,
    exts_sigs: String,
}

impl Parts {
    fn of(h: &ClientHello) -> Self {
        let mut ciphers: Vec<u16> = no_grease(&h.cipher_suites).collect();
        let exts: Vec<u16> = no_grease(&h.extensions).collect();
        let version = if h.has_extension(EXT_SUPPORTED_VERSIONS) {
            no_grease(&h.supported_versions).max()
        } else {
            Some(h.legacy_version)
        };
        let mut a = String::with_capacity(10);
        a.push('t');
        a.push_str(version.map_or("00", version_code));
        a.push(if h.has_extension(EXT_SERVER_NAME) {
            'd'
        } else {
            'i'
        });
        let _ = write!(a, "{:02}{:02}", ciphers.len().min(99), exts.len().min(99));
        a.push_str(&alpn_code(h.alpn.first().map(Vec::as_slice)));

        ciphers.sort_unstable();
        let mut hashed: Vec<u16> = exts
            .into_iter()
            .filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN)
            .collect();
        hashed.sort_unstable();
        let mut exts_sigs = hex_list(&hashed);
        let sigs: Vec<u16> = no_grease(&h.signature_algorithms).collect();
        if !sigs.is_empty() && !exts_sigs.is_empty() {
            exts_sigs.push('_');
            exts_sigs.push_str(&hex_list(&sigs));
        }
        Self {
            a,
            ciphers: hex_list(&ciphers),
            exts_sigs,
        }
    }
}

fn no_grease(values: &[u16]) -> impl Iterator<Item = u16> + '_ {
    values.iter().copied().filter(|v| !is_grease(*v))
}

/// The spec's two characters for a protocol version.
fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// The two ALPN characters of the first protocol name.
fn alpn_code(first: Option<&[u8]>) -> String {
    let Some((&head, &tail)) = first.and_then(|p| Some((p.first()?, p.last()?))) else {
        return "00".into();
    };
    if head.is_ascii_alphanumeric() && tail.is_ascii_alphanumeric() {
        return [char::from(head), char::from(tail)].iter().collect();
    }
    // The first and last digit of the name's hex form: high nibble of the first byte, low
    // nibble of the last.
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    [digit(head >> 4), digit(tail & 0x0f)].iter().collect()
}

/// `0a0b,1301`: lower-case 4-digit hex, comma-separated.
fn hex_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v:04x}");
    }
    s
}

/// The first 12 lower-case hex digits of the SHA-256 of `s`; [`EMPTY_HASH`] for nothing.
fn hash12(s: &str) -> String {
    if s.is_empty() {
        return EMPTY_HASH.into();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for b in digest.iter().take(6) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A JA4 fingerprint held in place (no allocation), for counting them per source and swarm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; LEN]);

impl Fingerprint {
    /// `s` if it has the shape of a JA4 ([`LEN`] printable ASCII characters).
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_graphic)
            .then_some(Self(bytes))
    }

    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse`), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::hello::{self, build::*};

    /// The hello of the spec's worked example (`technical_details/JA4.md`, "Example"): its 15
    /// suites and 16 extensions in the original order (`JA4_ro`), GREASE added the way Chrome
    /// sends it, which must change nothing.
    fn spec_example(grease: bool) -> ClientHello {
        let mut suites = vec![
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let sigs = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let mut exts = vec![
            (0x001b, vec![2, 0, 2]),
            sni("example.com"),
            (0x0033, vec![0, 0]),
            alpn(&[b"h2", b"http/1.1"]),
            (0x4469, vec![0, 3, 2, b'h', b'2']),
            (0x0017, vec![]),
            (0x002d, vec![1, 1]),
            list(0x000d, &sigs),
            (0x0005, vec![1, 0, 0, 0, 0]),
            (0x0023, vec![]),
            (0x0012, vec![]),
            list(0x002b, &[0x0304, 0x0303]),
            (0xff01, vec![0]),
            (0x000b, vec![1, 0]),
            list(0x000a, &[0x001d, 0x0017]),
            (0x0015, vec![0; 7]),
        ];
        if grease {
            suites.insert(0, 0x8a8a);
            exts.insert(0, (0x3a3a, vec![]));
            exts.push((0xdada, vec![0]));
            exts[12] = list(0x002b, &[0xeaea, 0x0304, 0x0303]);
            exts[8] = list(0x000d, &[&[0x5a5a][..], &sigs].concat());
        }
        hello::parse(&records(&message(0x0303, &suites, Some(&exts)), 1 << 14)).unwrap()
    }

    #[test]
    fn spec_example_byte_for_byte() {
        for grease in [false, true] {
            let h = spec_example(grease);
            assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_e5627efa2ab1", "{grease}");
            assert_eq!(
                ja4_raw(&h),
                "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,\
                 cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,\
                 ff01_0403,0804,0401,0503,0805,0501,0806,0601"
            );
        }
    }

    /// A published expected output of FoxIO's test suite (`python/test/testdata/ipv6.pcapng.json`,
    /// a TLS 1.2 client to www.cloudflare.com): its `JA4_r` lists rebuilt into a hello must
    /// give its `JA4`. Unusual signature algorithms (`efef`, `eeee`, `eded`) are not GREASE.
    #[test]
    fn published_tls12_capture() {
        let hex = |s: &str| -> Vec<u16> {
            s.split(',')
                .map(|x| u16::from_str_radix(x, 16).unwrap())
                .collect()
        };
        let suites = hex(
            "0004,0005,000a,0016,002f,0033,0035,0039,003c,003d,0041,0045,0067,006b,0081,0084,\
             0088,009c,009d,009e,009f,00ba,00be,00c0,00c4,00ff,c007,c008,c009,c00a,c011,c012,\
             c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa,ff85",
        );
        let sigs = hex("0601,0603,efef,0501,0503,0401,0403,eeee,eded,0301,0303,0201,0203");
        let exts = [
            sni("www.cloudflare.com"),
            list(0x000a, &[0x001d, 0x0017]),
            (0x000b, vec![1, 0]),
            list(0x000d, &sigs),
            alpn(&[b"h2", b"http/1.1"]),
        ];
        let h = hello::parse(&records(&message(0x0303, &suites, Some(&exts)), 1 << 14)).unwrap();
        assert_eq!(ja4(&h), "t12d4605h2_85626a9a5f7f_aaf95bb78ec9");
    }

    #[test]
    fn spec_hashes() {
        // The lists and truncated hashes the spec prints.
        assert_eq!(
            hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
            "8daaf6152771"
        );
        assert_eq!(
            hash12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"),
            "6d807ffa2a79"
        );
        assert_eq!(hash12(""), "000000000000");
    }

    #[test]
    fn without_signature_algorithms_no_underscore() {
        let mut h = spec_example(false);
        h.signature_algorithms.clear();
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_6d807ffa2a79");
    }

    #[test]
    fn browser_hello() {
        let h = hello::parse(&browser("www.example.com")).unwrap();
        let fp = ja4(&h);
        assert_eq!(fp.len(), LEN);
        // 15 suites, 16 extensions once the three GREASE values are gone; the extra
        // encrypted_client_hello (fe0d) and the post-quantum share change only the hash.
        assert!(fp.starts_with("t13d1516h2_8daaf6152771_"), "{fp}");
        assert_ne!(fp, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(Fingerprint::parse(&fp).map(|f| f.to_string()), Some(fp));
    }

    #[test]
    fn no_sni_no_alpn_tls12() {
        let exts = [
            list(0x000a, &[0x001d]),
            list(0x000d, &[0x0401, 0x0804]),
            (0x0017, vec![]),
        ];
        let msg = message(0x0303, &[0xc02f, 0x009c], Some(&exts));
        let h = hello::parse(&records(&msg, 1 << 14)).unwrap();
        let fp = ja4(&h);
        assert!(fp.starts_with("t12i020300_"), "{fp}");
        assert_eq!(&fp[11..23], hash12("009c,c02f"));
        assert_eq!(&fp[24..], hash12("000a,000d,0017_0401,0804"));
    }

    #[test]
    fn nothing_to_hash() {
        // No extensions at all: legacy version, `i`, `00` ALPN and an empty extension field.
        let msg = message(0x0301, &[0x0035], None);
        let h = hello::parse(&records(&msg, 1 << 14)).unwrap();
        assert_eq!(
            ja4(&h),
            format!("t10i010000_{}_000000000000", hash12("0035"))
        );
        // Only GREASE suites, only SNI and ALPN: both hashes are empty, the counts are not.
        let exts = [sni("a.example"), alpn(&[b"http/1.1"])];
        let msg = message(0x0303, &[0x2a2a], Some(&exts));
        let h = hello::parse(&records(&msg, 1 << 14)).unwrap();
        assert_eq!(ja4(&h), "t12d0002h1_000000000000_000000000000");
    }

    #[test]
    fn versions() {
        let with = |versions: &[u16], legacy: u16| {
            let exts = [list(0x002b, versions)];
            let msg = message(legacy, &[0x1301], Some(&exts));
            ja4(&hello::parse(&records(&msg, 1 << 14)).unwrap())[1..3].to_string()
        };
        assert_eq!(with(&[0x0303, 0x0304], 0x0303), "13");
        assert_eq!(with(&[0xfafa, 0x0302], 0x0303), "11");
        // Present but only GREASE or unknown: not the legacy version.
        assert_eq!(with(&[0x1a1a], 0x0303), "00");
        assert_eq!(with(&[0x7f1c], 0x0303), "00");
        assert_eq!(with(&[0x0300], 0x0301), "s3");
        assert_eq!(with(&[0x0002], 0x0301), "s2");
        let no_ext = |legacy: u16| {
            let msg = message(legacy, &[0x1301], Some(&[]));
            ja4(&hello::parse(&records(&msg, 1 << 14)).unwrap())[1..3].to_string()
        };
        assert_eq!(no_ext(0x0303), "12");
        assert_eq!(no_ext(0x0302), "11");
        assert_eq!(no_ext(0x0300), "s3");
        assert_eq!(no_ext(0x0399), "00");
        assert_eq!(version_code(0xfefd), "d2");
    }

    #[test]
    fn alpn_rules() {
        // The spec's examples, then the plain and degenerate cases.
        for (first, want) in [
            (&[0xab][..], "ab"),
            (&[0x20], "20"),
            (&[0xab, 0xcd], "ad"),
            (&[0x20, 0x61], "21"),
            (&[0x30, 0xab], "3b"),
            (&[0x61, 0x20], "60"),
            (&[0x30, 0x31, 0xab, 0xcd], "3d"),
            (&[0x30, 0xab, 0xcd, 0x31], "01"),
            (b"h2", "h2"),
            (b"http/1.1", "h1"),
            (b"h3", "h3"),
            (b"x", "xx"),
            (b"", "00"),
        ] {
            assert_eq!(alpn_code(Some(first)), want, "{first:02x?}");
        }
        assert_eq!(alpn_code(None), "00");
        // Only the first protocol counts, even when it is empty.
        let h = |protos: &[&[u8]]| {
            let exts = [alpn(protos)];
            let msg = message(0x0303, &[0x1301], Some(&exts));
            ja4(&hello::parse(&records(&msg, 1 << 14)).unwrap())[8..10].to_string()
        };
        assert_eq!(h(&[b"http/1.1", b"h2"]), "h1");
        assert_eq!(h(&[b"", b"h2"]), "00");
        assert_eq!(h(&[]), "00");
    }

    #[test]
    fn counts_cap_at_99() {
        let suites: Vec<u16> = (0x0100..0x0100 + 150).collect();
        let exts: Vec<Ext> = (0x0100..0x0100 + 120).map(|t| (t, vec![])).collect();
        let msg = message(0x0303, &suites, Some(&exts));
        let fp = ja4(&hello::parse(&records(&msg, 1 << 14)).unwrap());
        assert!(fp.starts_with("t12i999900_"), "{fp}");
    }

    /// `cargo test -p swarmwall --release --lib l7::ja4::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn throughput() {
        let payload = browser("www.example.com");
        const N: u32 = 200_000;
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for _ in 0..N {
            let h = hello::parse(std::hint::black_box(&payload)).unwrap();
            total += ja4(&h).len();
        }
        let elapsed = start.elapsed();
        println!(
            "hello::parse + ja4: {} bytes, {:.0} ns/hello ({total})",
            payload.len(),
            elapsed.as_nanos() as f64 / f64::from(N)
        );
    }

    #[test]
    fn fingerprint_shape() {
        assert!(Fingerprint::parse("t13d1516h2_8daaf6152771_e5627efa2ab1").is_some());
        assert!(Fingerprint::parse("t13d1516h2_8daaf6152771_e5627efa2ab").is_none());
        assert!(Fingerprint::parse("t13d1516h2 8daaf6152771_e5627efa2ab1").is_none());
        assert!(Fingerprint::parse("").is_none());
    }
}
