//! The whole TLS ClientHello: every field a fingerprint (JA4) or the detector needs.
//!
//! Built on the record and handshake walk of [`super::tls`] (same checks, same errors), but
//! where [`super::tls::sni`] stops at the server name, [`parse`] needs the whole message: a
//! payload cut anywhere before its last byte is [`ParseError::Truncated`] (the kernel may have
//! copied only the first segment; the rest of the flow can complete it). The extensions the
//! view decodes are parsed strictly — a length that does not fit is
//! [`ParseError::Malformed`], as a TLS server would answer `decode_error` — and every other
//! extension is skipped by its length. Work and memory are linear in the payload.

use super::tls::{self, EXT_SERVER_NAME, ParseError, Reader};

/// Extension type `supported_groups` (RFC 8422, RFC 8446 §4.2.7).
pub const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
/// Extension type `signature_algorithms` (RFC 8446 §4.2.3).
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
/// Extension type `application_layer_protocol_negotiation` (RFC 7301).
pub const EXT_ALPN: u16 = 0x0010;
/// Extension type `supported_versions` (RFC 8446 §4.2.1).
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
/// ALPN protocol names kept per hello; clients offer two or three, and only the first one
/// enters the fingerprint.
pub const MAX_ALPN: usize = 16;

/// What a ClientHello says, in the order it says it. GREASE values (RFC 8701) are kept: the
/// consumer decides whether they matter (JA4 ignores them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients alike).
    pub legacy_version: u16,
    /// Cipher suites, as offered.
    pub cipher_suites: Vec<u16>,
    /// Extension types, in the order they appear.
    pub extensions: Vec<u16>,
    /// The `host_name` of `server_name`, ASCII lower-cased.
    pub sni: Option<String>,
    /// ALPN protocol names, as offered (at most [`MAX_ALPN`]; the rest are checked, not kept).
    pub alpn: Vec<Vec<u8>>,
    /// `supported_versions`, as offered.
    pub supported_versions: Vec<u16>,
    /// `signature_algorithms`, as offered.
    pub signature_algorithms: Vec<u16>,
    /// `supported_groups`, as offered.
    pub supported_groups: Vec<u16>,
}

impl ClientHello {
    /// Whether the hello carries an extension of type `ty`.
    pub fn has_extension(&self, ty: u16) -> bool {
        self.extensions.contains(&ty)
    }
}

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The ClientHello at the start of `payload` (one or more TLS handshake records).
///
/// `Truncated` unless the whole message is present; bytes after it (the next records of the
/// flow) are ignored. Of an extension sent twice (no conforming client does), both are checked
/// and count in `extensions`, and the first gives the value. When this answers, the server
/// name is the one [`tls::sni`] gives for the same bytes.
pub fn parse(payload: &[u8]) -> Result<ClientHello, ParseError> {
    let msg = tls::handshake_message(payload)?;
    let tls::Prefix {
        version,
        suites,
        mut hello,
    } = tls::hello_prefix(&msg)?;
    let mut out = ClientHello {
        legacy_version: version,
        cipher_suites: u16s(suites),
        ..ClientHello::default()
    };
    if !hello.done() {
        let len = usize::from(hello.u16("extensions length")?);
        let block = hello.take(len, "extensions length")?;
        extensions(block, &mut out)?;
    }
    if !hello.done() {
        // The declared hello goes on: bytes that are there are garbage, bytes that are not
        // are still to come.
        return Err(if hello.present() {
            ParseError::Malformed("bytes after the extensions")
        } else {
            ParseError::Truncated
        });
    }
    Ok(out)
}

/// Walks a complete extensions block into `out`.
fn extensions(block: &[u8], out: &mut ClientHello) -> Result<(), ParseError> {
    let mut exts = Reader::new(block, block.len());
    // Each round consumes at least four bytes of the block.
    while !exts.done() {
        let ty = exts.u16("extension type")?;
        let len = usize::from(exts.u16("extension length")?);
        let data = exts.take(len, "extension data")?;
        let first = !out.extensions.contains(&ty);
        out.extensions.push(ty);
        // Every occurrence is checked; the first one gives the value (for the server name,
        // the first that names a host, as `tls::sni` reads it).
        let mut r = Reader::new(data, data.len());
        match ty {
            EXT_SERVER_NAME => {
                let name = tls::server_name(r)?;
                if out.sni.is_none() {
                    out.sni = name;
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                let n = usize::from(r.u8("supported versions length")?);
                let list = u16_list(&mut r, n, "supported versions")?;
                if first {
                    out.supported_versions = list;
                }
            }
            EXT_SIGNATURE_ALGORITHMS => {
                let n = usize::from(r.u16("signature algorithms length")?);
                let list = u16_list(&mut r, n, "signature algorithms")?;
                if first {
                    out.signature_algorithms = list;
                }
            }
            EXT_SUPPORTED_GROUPS => {
                let n = usize::from(r.u16("supported groups length")?);
                let list = u16_list(&mut r, n, "supported groups")?;
                if first {
                    out.supported_groups = list;
                }
            }
            EXT_ALPN => {
                let n = usize::from(r.u16("ALPN list length")?);
                let mut list = r.sub(n, "ALPN list length")?;
                // Each round consumes at least the length byte.
                while !list.done() {
                    let len = usize::from(list.u8("ALPN protocol length")?);
                    let name = list.take(len, "ALPN protocol")?;
                    if first && out.alpn.len() < MAX_ALPN {
                        out.alpn.push(name.to_vec());
                    }
                }
                if !r.done() {
                    return Err(ParseError::Malformed("bytes after the ALPN list"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A list of `n` bytes of big-endian `u16`s that must fill the rest of `r`.
fn u16_list(r: &mut Reader<'_>, n: usize, what: &'static str) -> Result<Vec<u16>, ParseError> {
    if !n.is_multiple_of(2) {
        return Err(ParseError::Malformed(what));
    }
    let bytes = r.take(n, what)?;
    if !r.done() {
        return Err(ParseError::Malformed(what));
    }
    Ok(u16s(bytes))
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Builders of ClientHello bytes for tests.
#[cfg(test)]
pub(crate) mod build {
    /// One extension: type and data.
    pub type Ext = (u16, Vec<u8>);

    /// A ClientHello handshake message (type, length, body) with `suites` and, unless `None`,
    /// an extensions block of `exts`.
    pub fn message(legacy_version: u16, suites: &[u16], exts: Option<&[Ext]>) -> Vec<u8> {
        let mut body = legacy_version.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x5a; 32]);
        body.push(32);
        body.extend_from_slice(&[0xa5; 32]);
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        if let Some(exts) = exts {
            let mut block = Vec::new();
            for (ty, data) in exts {
                block.extend_from_slice(&ty.to_be_bytes());
                block.extend_from_slice(&(data.len() as u16).to_be_bytes());
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&(block.len() as u16).to_be_bytes());
            body.extend_from_slice(&block);
        }
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// `msg` in handshake records of at most `chunk` bytes.
    pub fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// A `server_name` extension with one `host_name`.
    pub fn sni(host: &str) -> Ext {
        let mut data = ((host.len() + 3) as u16).to_be_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(&(host.len() as u16).to_be_bytes());
        data.extend_from_slice(host.as_bytes());
        (0x0000, data)
    }

    /// An ALPN extension offering `protos`.
    pub fn alpn(protos: &[&[u8]]) -> Ext {
        let mut list = Vec::new();
        for p in protos {
            list.push(p.len() as u8);
            list.extend_from_slice(p);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        (0x0010, data)
    }

    /// A list extension of type `ty`: a `u16` (or, for `supported_versions`, `u8`) byte length,
    /// then `values`.
    pub fn list(ty: u16, values: &[u16]) -> Ext {
        let n = values.len() * 2;
        let mut data = if ty == super::EXT_SUPPORTED_VERSIONS {
            vec![n as u8]
        } else {
            (n as u16).to_be_bytes().to_vec()
        };
        for v in values {
            data.extend_from_slice(&v.to_be_bytes());
        }
        (ty, data)
    }

    /// A Chrome-like hello to `host` with GREASE, a post-quantum sized key share (so it is
    /// ~1.8 KB, like a real one) and the SNI near the end, in one record.
    pub fn browser(host: &str) -> Vec<u8> {
        let suites = [
            0x3a3a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let mut key_share = vec![0x04, 0xe8, 0x3a, 0x3a, 0, 1, 0, 0x11, 0xec, 0x04, 0xc0];
        key_share.extend_from_slice(&[0x42; 1216]);
        key_share.extend_from_slice(&[0, 0x1d, 0, 0x20]);
        key_share.extend_from_slice(&[0x24; 32]);
        let exts = vec![
            (0x0a0a, vec![]),
            (0x0017, vec![]),
            (0x001b, vec![0x02, 0x00, 0x02]),
            (0xff01, vec![0]),
            list(0x000a, &[0x3a3a, 0x11ec, 0x001d, 0x0017, 0x0018]),
            (0x000b, vec![1, 0]),
            (0x0023, vec![]),
            alpn(&[b"h2", b"http/1.1"]),
            (0x0005, vec![1, 0, 0, 0, 0]),
            list(
                0x000d,
                &[
                    0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
                ],
            ),
            (0x0012, vec![]),
            (0x0033, key_share),
            (0x002d, vec![1, 1]),
            list(0x002b, &[0x4a4a, 0x0304, 0x0303]),
            (0x4469, vec![0, 3, 2, b'h', b'2']),
            (0xfe0d, vec![0; 250]),
            sni(host),
            (0x1a1a, vec![0]),
        ];
        records(&message(0x0303, &suites, Some(&exts)), 1 << 14)
    }
}

#[cfg(test)]
mod tests {
    use super::{build::*, *};

    #[test]
    fn browser_hello_whole() {
        let payload = browser("WWW.Example.com");
        assert!(payload.len() > 1700, "{}", payload.len());
        let h = parse(&payload).unwrap();
        assert_eq!(h.legacy_version, 0x0303);
        assert_eq!(h.cipher_suites.len(), 16);
        assert_eq!(h.cipher_suites[0], 0x3a3a);
        assert_eq!(h.extensions.len(), 18);
        assert_eq!(h.extensions[..3], [0x0a0a, 0x0017, 0x001b]);
        assert_eq!(h.extensions[16..], [0x0000, 0x1a1a]);
        assert_eq!(h.sni.as_deref(), Some("www.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(h.supported_versions, [0x4a4a, 0x0304, 0x0303]);
        assert_eq!(h.signature_algorithms.len(), 8);
        assert_eq!(h.signature_algorithms[0], 0x0403);
        assert_eq!(h.supported_groups, [0x3a3a, 0x11ec, 0x001d, 0x0017, 0x0018]);
        assert!(h.has_extension(EXT_ALPN) && !h.has_extension(0x0039));
        // The same message fragmented over small records parses the same.
        let msg = &payload[5..];
        for chunk in [1, 7, 512, 1400] {
            assert_eq!(parse(&records(msg, chunk)).as_ref(), Ok(&h), "{chunk}");
        }
    }

    #[test]
    fn cut_anywhere_is_truncated() {
        for payload in [
            browser("shop.example"),
            records(&browser("frag.example")[5..], 300),
            records(&message(0x0303, &[0x1301], None), 1 << 14),
        ] {
            let full = parse(&payload).unwrap();
            for cut in 0..payload.len() {
                assert_eq!(
                    parse(&payload[..cut]),
                    Err(ParseError::Truncated),
                    "cut {cut} of {}",
                    payload.len()
                );
            }
            // Whatever follows the hello in the flow does not matter.
            let mut more = payload.clone();
            more.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3]);
            assert_eq!(parse(&more), Ok(full));
        }
    }

    #[test]
    fn sni_past_the_first_segment() {
        // The SNI sits after the first 1.5 KB: `tls::sni` on the first segment alone cannot
        // answer, and neither can the whole view; the whole flow answers both.
        let payload = browser("late.example");
        let at = payload
            .windows(12)
            .position(|w| w == b"late.example")
            .unwrap();
        assert!(at > 1500, "{at}");
        assert_eq!(parse(&payload[..1448]), Err(ParseError::Truncated));
        assert_eq!(tls::sni(&payload[..1448]), Err(ParseError::Truncated));
        assert_eq!(
            parse(&payload).unwrap().sni.as_deref(),
            Some("late.example")
        );
    }

    #[test]
    fn no_extensions_and_empty_ones() {
        let h = parse(&records(&message(0x0301, &[0x002f, 0x00ff], None), 99)).unwrap();
        assert_eq!(h.legacy_version, 0x0301);
        assert_eq!(h.cipher_suites, [0x002f, 0x00ff]);
        assert!(h.extensions.is_empty() && h.sni.is_none() && h.alpn.is_empty());
        let h = parse(&records(&message(0x0303, &[0x1301], Some(&[])), 99)).unwrap();
        assert!(h.extensions.is_empty());
        // An ALPN list with an empty name, and an empty list: decodable, kept as sent.
        for (protos, want) in [
            (&[&b""[..], b"h2"][..], vec![vec![], b"h2".to_vec()]),
            (&[], vec![]),
        ] {
            let exts = [alpn(protos)];
            let h = parse(&records(&message(0x0303, &[0x1301], Some(&exts)), 99)).unwrap();
            assert_eq!(h.alpn, want);
            assert_eq!(h.extensions, [EXT_ALPN]);
        }
    }

    #[test]
    fn duplicate_extension_first_wins() {
        let exts = [sni("a.example"), sni("b.example")];
        let h = parse(&records(&message(0x0303, &[0x1301], Some(&exts)), 99)).unwrap();
        assert_eq!(h.sni.as_deref(), Some("a.example"));
        assert_eq!(h.extensions, [0, 0]);
    }

    #[test]
    fn alpn_names_are_bounded() {
        let many: Vec<&[u8]> = (0..100).map(|_| &b"x"[..]).collect();
        let exts = [alpn(&many)];
        let h = parse(&records(&message(0x0303, &[0x1301], Some(&exts)), 99)).unwrap();
        assert_eq!(h.alpn.len(), MAX_ALPN);
    }

    #[test]
    fn malformed_extension_contents() {
        let m = |ext: Ext| parse(&records(&message(0x0303, &[0x1301], Some(&[ext])), 1 << 14));
        let bad = ParseError::Malformed;
        assert_eq!(
            m((EXT_SUPPORTED_VERSIONS, vec![3, 3, 4, 3])),
            Err(bad("supported versions"))
        );
        assert_eq!(
            m((EXT_SUPPORTED_VERSIONS, vec![4, 3, 4])),
            Err(bad("supported versions"))
        );
        assert_eq!(
            m((EXT_SUPPORTED_VERSIONS, vec![2, 3, 4, 0])),
            Err(bad("supported versions"))
        );
        assert_eq!(
            m((EXT_SIGNATURE_ALGORITHMS, vec![0])),
            Err(bad("signature algorithms length"))
        );
        assert_eq!(
            m((EXT_SUPPORTED_GROUPS, vec![0, 4, 0, 0x1d])),
            Err(bad("supported groups"))
        );
        assert_eq!(
            m((EXT_ALPN, vec![0, 3, 2, b'h'])),
            Err(bad("ALPN list length"))
        );
        assert_eq!(
            m((EXT_ALPN, vec![0, 2, 2, b'h'])),
            Err(bad("ALPN protocol"))
        );
        assert_eq!(
            m((EXT_ALPN, vec![0, 1, 0, 9])),
            Err(bad("bytes after the ALPN list"))
        );
        assert_eq!(
            m((EXT_SERVER_NAME, vec![0, 0])),
            Err(bad("empty server name list"))
        );
        // An extension longer than the block.
        let mut msg = message(0x0303, &[0x1301], Some(&[(0x0015, vec![0; 4])]));
        let at = msg.len() - 6;
        msg[at..at + 2].copy_from_slice(&[0, 9]);
        assert_eq!(parse(&records(&msg, 1 << 14)), Err(bad("extension data")));
        // Stray bytes after the block, inside the declared hello.
        let mut msg = message(0x0303, &[0x1301], Some(&[]));
        msg[3] += 2;
        msg.extend_from_slice(&[0, 0]);
        assert_eq!(
            parse(&records(&msg, 1 << 14)),
            Err(bad("bytes after the extensions"))
        );
    }

    #[test]
    fn not_a_hello() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::NotTls));
        let mut msg = message(0x0303, &[0x1301], None);
        msg[0] = 2;
        assert_eq!(
            parse(&records(&msg, 1 << 14)),
            Err(ParseError::NotClientHello)
        );
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
    }

    #[test]
    fn grease_values() {
        let grease: Vec<u16> = (0..=u16::MAX).filter(|v| is_grease(*v)).collect();
        assert_eq!(grease.len(), 16);
        assert_eq!(grease[0], 0x0a0a);
        assert_eq!(grease[15], 0xfafa);
        assert!(
            grease
                .iter()
                .all(|v| v >> 8 == v & 0xff && v & 0x0f == 0x0a)
        );
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301));
    }
}
