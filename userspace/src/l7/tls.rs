//! The server name (SNI) of a TLS ClientHello from a sampled, possibly truncated payload.
//!
//! Walks the record layer (a ClientHello split over several handshake records is stitched back
//! together), then the ClientHello: version, random, session id, cipher suites, compression
//! methods and the extensions, until the `server_name` extension. Every length field is checked
//! twice: against the structure that contains it (a violation is [`ParseError::Malformed`]) and
//! against the bytes actually copied (running out is [`ParseError::Truncated`]). No recursion;
//! every loop consumes input, so the work is linear in the payload. [`super::hello`] reuses this
//! walk for the whole ClientHello.

use std::borrow::Cow;

/// TLS record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// Extension type `server_name` (RFC 6066).
pub(super) const EXT_SERVER_NAME: u16 = 0;
/// `NameType` `host_name`.
const NAME_HOST: u8 = 0;
/// Longest TLS plaintext record body (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
/// Record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;

/// Why a payload gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a TLS 3.x handshake record.
    #[error("not a TLS handshake record")]
    NotTls,
    /// A handshake record, but its message is not a ClientHello.
    #[error("TLS handshake message is not a ClientHello")]
    NotClientHello,
    /// The payload ends before the part asked for (the server name, or the whole ClientHello)
    /// was reached; more of the flow may complete it.
    #[error("truncated ClientHello")]
    Truncated,
    /// A length or field that no conforming client sends.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// The `host_name` of the ClientHello's `server_name` extension, ASCII lower-cased.
///
/// `Ok(None)` when the whole ClientHello was seen and carries no host name; `Truncated` when
/// the payload ends before the name (or the proof that there is none) was reached. Once the name
/// is found nothing after it is read, so a payload cut after the extension still answers.
pub fn sni(payload: &[u8]) -> Result<Option<String>, ParseError> {
    let msg = handshake_message(payload)?;
    client_hello_sni(&msg)
}

/// The first handshake message's bytes (type, length, body), as far as the payload goes,
/// reassembled from consecutive handshake records when the sender fragmented it.
pub(super) fn handshake_message(payload: &[u8]) -> Result<Cow<'_, [u8]>, ParseError> {
    let (first, mut pos) = record(payload, 0)?;
    let mut msg = Cow::Borrowed(first);
    // Each round consumes a record header at least, so this ends within `payload.len() / 5`.
    while pos < payload.len() && !whole_message(&msg) {
        let rest = &payload[pos..];
        if rest.len() < RECORD_HEADER {
            break;
        }
        if rest[0] != CONTENT_HANDSHAKE || rest[1] != 3 {
            return Err(ParseError::Malformed("other record inside the ClientHello"));
        }
        let (body, next) = record(payload, pos)?;
        msg.to_mut().extend_from_slice(body);
        pos = next;
    }
    Ok(msg)
}

/// How much of a byte stream a ClientHello at its start takes (see [`hello_extent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// The hello takes the first this-many bytes (record headers included; a record may be
    /// cut after the message's last byte): its handshake message is complete there, or a
    /// record that cannot continue it (not a handshake record, empty or oversize) starts
    /// there, so no more bytes will make it whole.
    Whole(usize),
    /// The message goes on past the bytes given; more of the stream is needed.
    More,
    /// The stream does not start a TLS ClientHello.
    NotHello,
}

/// How many bytes of a TCP stream that starts with `stream` the ClientHello at its start
/// takes: the client may split the handshake message over several records (RFC 8446 §5.1),
/// which are followed here until the message's declared length is covered. A record that is
/// not a handshake record ends the walk (the hello is malformed; the parser says so). Every
/// round consumes a record header and at least one body byte, so the work is linear.
pub fn hello_extent(stream: &[u8]) -> Extent {
    let mut pos = 0;
    // The message header (type, 24-bit length) as it arrives, perhaps over tiny records.
    let mut header = [0u8; 4];
    let mut got = 0usize;
    let mut need: Option<usize> = None;
    loop {
        let rest = &stream[pos..];
        if rest.len() < RECORD_HEADER {
            return match rest {
                [t, ..] if *t != CONTENT_HANDSHAKE && pos == 0 => Extent::NotHello,
                [_, major, ..] if *major != 3 && pos == 0 => Extent::NotHello,
                _ => Extent::More,
            };
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest[0] != CONTENT_HANDSHAKE || rest[1] != 3 || len == 0 || len > MAX_RECORD {
            return if pos == 0 {
                Extent::NotHello
            } else {
                Extent::Whole(pos)
            };
        }
        let body = &rest[RECORD_HEADER..(RECORD_HEADER + len).min(rest.len())];
        for (i, &b) in body.iter().enumerate() {
            if got + i >= header.len() {
                break;
            }
            header[got + i] = b;
        }
        if need.is_none() && got + body.len() >= header.len() {
            if header[0] != CLIENT_HELLO {
                return Extent::NotHello;
            }
            need = Some(header.len() + u24(header[1], header[2], header[3]));
        }
        if let Some(need) = need
            && got + body.len() >= need
        {
            return Extent::Whole(pos + RECORD_HEADER + (need - got));
        }
        if body.len() < len {
            return Extent::More;
        }
        got += len;
        pos += RECORD_HEADER + len;
    }
}

/// The body (as far as it is present) of the handshake record at `pos`, and where the next
/// record starts.
fn record(payload: &[u8], pos: usize) -> Result<(&[u8], usize), ParseError> {
    let rest = payload.get(pos..).unwrap_or_default();
    match rest {
        [] => return Err(ParseError::Truncated),
        [t, ..] if *t != CONTENT_HANDSHAKE => return Err(ParseError::NotTls),
        [_, major, ..] if *major != 3 => return Err(ParseError::NotTls),
        _ if rest.len() < RECORD_HEADER => return Err(ParseError::Truncated),
        _ => {}
    }
    let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
    if len == 0 {
        return Err(ParseError::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD {
        return Err(ParseError::Malformed("record longer than 2^14"));
    }
    let end = RECORD_HEADER + len;
    let body = &rest[RECORD_HEADER..end.min(rest.len())];
    Ok((body, pos + end))
}

/// Whether `msg` holds a complete handshake message.
fn whole_message(msg: &[u8]) -> bool {
    match msg {
        [_, a, b, c, body @ ..] => body.len() >= u24(*a, *b, *c),
        _ => false,
    }
}

fn u24(a: u8, b: u8, c: u8) -> usize {
    (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
}

/// Walks a ClientHello handshake message to its server name.
fn client_hello_sni(msg: &[u8]) -> Result<Option<String>, ParseError> {
    let Prefix { mut hello, .. } = hello_prefix(msg)?;
    if hello.done() {
        // No extensions at all (SSL 3.0 style).
        return Ok(None);
    }

    let ext_len = usize::from(hello.u16("extensions length")?);
    let mut exts = hello.sub(ext_len, "extensions length")?;
    // Each round consumes at least four bytes of the block.
    while !exts.done() {
        let ty = exts.u16("extension type")?;
        let len = usize::from(exts.u16("extension length")?);
        if ty != EXT_SERVER_NAME {
            exts.take(len, "extension data")?;
            continue;
        }
        let ext = exts.sub(len, "server_name extension length")?;
        if let Some(name) = server_name(ext)? {
            return Ok(Some(name));
        }
    }
    if !hello.done() {
        return Err(ParseError::Malformed("bytes after the extensions"));
    }
    Ok(None)
}

/// The fixed part of a ClientHello, up to the extensions.
pub(super) struct Prefix<'a> {
    /// `legacy_version`.
    pub(super) version: u16,
    /// The cipher suites, two bytes each, as sent.
    pub(super) suites: &'a [u8],
    /// The rest of the hello body: the optional extensions block.
    pub(super) hello: Reader<'a>,
}

/// Checks the handshake header of a ClientHello message and reads its fixed fields.
pub(super) fn hello_prefix(msg: &[u8]) -> Result<Prefix<'_>, ParseError> {
    let mut top = Reader::new(msg, usize::MAX);
    if top.u8("handshake type")? != CLIENT_HELLO {
        return Err(ParseError::NotClientHello);
    }
    let len = top.take(3, "handshake length")?;
    let len = u24(len[0], len[1], len[2]);
    let mut hello = top.sub(len, "handshake length")?;

    let version = hello.take(2, "client version")?;
    if version[0] != 3 {
        return Err(ParseError::Malformed("client version is not 3.x"));
    }
    let version = u16::from_be_bytes([version[0], version[1]]);
    hello.take(32, "random")?;
    let session_id = hello.u8("session id length")?;
    if session_id > 32 {
        return Err(ParseError::Malformed("session id longer than 32 bytes"));
    }
    hello.take(usize::from(session_id), "session id")?;
    let suites = usize::from(hello.u16("cipher suites length")?);
    if suites < 2 || suites % 2 != 0 {
        return Err(ParseError::Malformed("cipher suites length"));
    }
    let suites = hello.take(suites, "cipher suites")?;
    let compression = usize::from(hello.u8("compression methods length")?);
    if compression == 0 {
        return Err(ParseError::Malformed("no compression method"));
    }
    hello.take(compression, "compression methods")?;
    Ok(Prefix {
        version,
        suites,
        hello,
    })
}

/// The first `host_name` in the data of a `server_name` extension; `None` when the list holds
/// only other name types.
pub(super) fn server_name(mut ext: Reader<'_>) -> Result<Option<String>, ParseError> {
    let list_len = usize::from(ext.u16("server name list length")?);
    let mut list = ext.sub(list_len, "server name list length")?;
    if list.done() {
        return Err(ParseError::Malformed("empty server name list"));
    }
    while !list.done() {
        let name_type = list.u8("name type")?;
        let name_len = usize::from(list.u16("server name length")?);
        let name = list.take(name_len, "server name")?;
        if name_type == NAME_HOST {
            return host_name(name).map(Some);
        }
    }
    Ok(None)
}

/// A `HostName`, lower-cased; non-ASCII bytes (not allowed, but seen) are replaced lossily.
fn host_name(name: &[u8]) -> Result<String, ParseError> {
    if name.is_empty() {
        return Err(ParseError::Malformed("empty server name"));
    }
    if name.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::Malformed(
            "control byte or space in server name",
        ));
    }
    let mut host = String::from_utf8_lossy(name).into_owned();
    host.make_ascii_lowercase();
    Ok(host)
}

/// A cursor over a length-delimited structure of which only a prefix may be present: `limit` is
/// the declared length, `data` the part of it that was copied.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    limit: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8], limit: usize) -> Self {
        Self {
            data,
            limit,
            pos: 0,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.limit
    }

    /// Whether copied bytes remain (as opposed to declared bytes that were not copied).
    pub(super) fn present(&self) -> bool {
        self.pos < self.data.len()
    }

    /// The next `n` bytes: `Malformed(what)` past the declared end, `Truncated` past the data.
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.end(n, what)?;
        let bytes = self.data.get(self.pos..end).ok_or(ParseError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// A reader over the next `n` bytes (which may be only partly present).
    pub(super) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, ParseError> {
        let end = self.end(n, what)?;
        let data = self
            .data
            .get(self.pos.min(self.data.len())..end.min(self.data.len()))
            .unwrap_or_default();
        self.pos = end;
        Ok(Reader::new(data, n))
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn end(&self, n: usize, what: &'static str) -> Result<usize, ParseError> {
        self.pos
            .checked_add(n)
            .filter(|&end| end <= self.limit)
            .ok_or(ParseError::Malformed(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::l7::hello::build::Ext;

    fn server_name_ext(names: &[(u8, &[u8])]) -> Ext {
        let mut list = Vec::new();
        for (ty, name) in names {
            list.push(*ty);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        (EXT_SERVER_NAME, data)
    }

    /// A ClientHello handshake message (type, length, body), with GREASE first among six
    /// suites.
    fn hello_message(exts: Option<&[Ext]>) -> Vec<u8> {
        crate::l7::hello::build::message(
            0x0303,
            &[0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f],
            exts,
        )
    }

    fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// A browser-like extension list: GREASE first and last, SNI in the middle.
    fn browser_exts(host: &str) -> Vec<Ext> {
        vec![
            (0x0a0a, vec![]),
            (0x0017, vec![]),
            (0xff01, vec![0]),
            (0x000a, vec![0, 6, 0x3a, 0x3a, 0, 0x1d, 0, 0x17]),
            (0x000b, vec![1, 0]),
            (0x0023, vec![]),
            server_name_ext(&[(NAME_HOST, host.as_bytes())]),
            (0x0010, b"\x00\x0c\x02h2\x08http/1.1".to_vec()),
            (0x0005, vec![1, 0, 0, 0, 0]),
            (0x000d, vec![0, 4, 4, 3, 8, 4]),
            (0x0033, {
                let mut ks = vec![0, 0x29, 0x3a, 0x3a, 0, 1, 0, 0, 0x1d, 0, 0x20];
                ks.extend_from_slice(&[0x11; 32]);
                ks
            }),
            (0x002d, vec![1, 1]),
            (0x002b, vec![4, 0x4a, 0x4a, 3, 4]),
            (0x1a1a, vec![0]),
        ]
    }

    #[test]
    fn browser_hello_with_grease() {
        let payload = records(
            &hello_message(Some(&browser_exts("WWW.Example.COM"))),
            1 << 14,
        );
        assert_eq!(sni(&payload), Ok(Some("www.example.com".to_owned())));
    }

    #[test]
    fn hello_without_sni() {
        let exts = [(0x000a, vec![0, 2, 0, 0x1d]), (0x2a2a, vec![])];
        assert_eq!(
            sni(&records(&hello_message(Some(&exts)), 1 << 14)),
            Ok(None)
        );
        // No extension block at all.
        assert_eq!(sni(&records(&hello_message(None), 1 << 14)), Ok(None));
        // An empty one.
        assert_eq!(sni(&records(&hello_message(Some(&[])), 1 << 14)), Ok(None));
    }

    #[test]
    fn sni_not_first_in_list() {
        let exts = [server_name_ext(&[(7, b"other"), (NAME_HOST, b"a.example")])];
        assert_eq!(
            sni(&records(&hello_message(Some(&exts)), 1 << 14)),
            Ok(Some("a.example".to_owned()))
        );
        // Only unknown name types: no host name.
        let exts = [server_name_ext(&[(7, b"other")])];
        assert_eq!(
            sni(&records(&hello_message(Some(&exts)), 1 << 14)),
            Ok(None)
        );
    }

    #[test]
    fn truncated_at_every_offset() {
        for exts in [browser_exts("shop.example"), vec![(0x0a0a, vec![])]] {
            let payload = records(&hello_message(Some(&exts)), 1 << 14);
            let full = sni(&payload);
            // The offset after which the name is known.
            let known = (0..=payload.len())
                .find(|&cut| sni(&payload[..cut]) == full)
                .unwrap();
            for cut in 0..payload.len() {
                let got = sni(&payload[..cut]);
                if cut < known {
                    assert_eq!(got, Err(ParseError::Truncated), "cut {cut}");
                } else {
                    assert_eq!(got, full, "cut {cut}");
                }
            }
            if full == Ok(None) {
                assert_eq!(known, payload.len());
            } else {
                assert!(known < payload.len() - 50, "{known}");
            }
        }
    }

    #[test]
    fn fragmented_over_records() {
        let msg = hello_message(Some(&browser_exts("frag.example")));
        for chunk in [1, 2, 3, 4, 5, 50, 100, 1000] {
            let payload = records(&msg, chunk);
            assert_eq!(
                sni(&payload),
                Ok(Some("frag.example".to_owned())),
                "chunk {chunk}"
            );
            // Cut anywhere: a prefix never panics and is Truncated or the answer.
            for cut in 0..payload.len() {
                let got = sni(&payload[..cut]);
                assert!(
                    got == Err(ParseError::Truncated) || got == Ok(Some("frag.example".into())),
                    "chunk {chunk} cut {cut}: {got:?}"
                );
            }
        }
        // An alert in the middle of the hello.
        let mut payload = records(&msg[..10], 10);
        payload.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(sni(&payload), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn the_extent_follows_the_records_to_the_end_of_the_message() {
        let msg = hello_message(Some(&browser_exts("a.example")));
        for chunk in [1, 3, 4, 5, 100, msg.len() - 1, msg.len(), 1 << 14] {
            let stream = records(&msg, chunk);
            // Whole at exactly the stream's length, even with the next record after it.
            let mut more = stream.clone();
            more.extend_from_slice(&[23, 3, 3, 0, 2, 0, 0]);
            assert_eq!(hello_extent(&more), Extent::Whole(stream.len()), "{chunk}");
            for cut in 0..stream.len() {
                assert_eq!(hello_extent(&stream[..cut]), Extent::More, "{chunk} {cut}");
            }
        }
        // A record that is not a handshake one ends the hello where it starts.
        let stream = records(&msg, 64);
        let mut bad = stream[..64 + 5].to_vec();
        bad.extend_from_slice(&[23, 3, 3, 0, 2, 0, 0]);
        assert_eq!(hello_extent(&bad), Extent::Whole(69));
    }

    #[test]
    fn the_extent_of_what_is_no_hello() {
        assert_eq!(hello_extent(b"GET / HTTP/1.1\r\n"), Extent::NotHello);
        assert_eq!(hello_extent(&[22, 2, 0, 0, 1, 1]), Extent::NotHello);
        assert_eq!(hello_extent(&[22, 3, 1, 0, 0]), Extent::NotHello);
        assert_eq!(hello_extent(&[22, 3, 1, 0x40, 1, 1]), Extent::NotHello);
        // A server hello (type 2).
        assert_eq!(
            hello_extent(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Extent::NotHello
        );
        assert_eq!(hello_extent(&[22]), Extent::More);
        assert_eq!(hello_extent(&[]), Extent::More);
    }

    #[test]
    fn trailing_data_after_the_hello_is_ignored() {
        let mut payload = records(&hello_message(Some(&browser_exts("a.example"))), 1 << 14);
        payload.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3]);
        assert_eq!(sni(&payload), Ok(Some("a.example".to_owned())));
    }

    #[test]
    fn not_tls() {
        assert_eq!(sni(b"GET / HTTP/1.1\r\n\r\n"), Err(ParseError::NotTls));
        assert_eq!(
            sni(&[0x16, 0x02, 0x00, 0x00, 0x10]),
            Err(ParseError::NotTls)
        );
        assert_eq!(
            sni(&[0x17, 0x03, 0x03, 0x00, 0x10]),
            Err(ParseError::NotTls)
        );
        // SSLv2-compatible hello.
        assert_eq!(
            sni(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
            Err(ParseError::NotTls)
        );
        assert_eq!(sni(&[0x15]), Err(ParseError::NotTls));
        assert_eq!(sni(&[]), Err(ParseError::Truncated));
        assert_eq!(sni(&[0x16]), Err(ParseError::Truncated));
        assert_eq!(sni(&[0x16, 0x03, 0x01, 0x02]), Err(ParseError::Truncated));
    }

    #[test]
    fn not_client_hello() {
        let mut msg = hello_message(None);
        msg[0] = 2; // ServerHello
        assert_eq!(
            sni(&records(&msg, 1 << 14)),
            Err(ParseError::NotClientHello)
        );
    }

    #[test]
    fn malformed_lengths() {
        let good = hello_message(Some(&[server_name_ext(&[(NAME_HOST, b"a.example")])]));
        let sid = 4 + 2 + 32; // offset of the session id length
        let suites = sid + 1 + 32;
        let comp = suites + 2 + 12;
        let exts = comp + 2;
        let sni_ext = exts + 2;
        let patch = |at: usize, bytes: &[u8]| {
            let mut m = good.clone();
            m[at..at + bytes.len()].copy_from_slice(bytes);
            sni(&records(&m, 1 << 14))
        };
        assert_eq!(
            patch(sid, &[33]),
            Err(ParseError::Malformed("session id longer than 32 bytes"))
        );
        assert_eq!(
            patch(suites, &[0, 11]),
            Err(ParseError::Malformed("cipher suites length"))
        );
        assert_eq!(
            patch(suites, &[0, 0]),
            Err(ParseError::Malformed("cipher suites length"))
        );
        assert_eq!(
            patch(suites, &[0xff, 0xfe]),
            Err(ParseError::Malformed("cipher suites"))
        );
        assert_eq!(
            patch(comp, &[0]),
            Err(ParseError::Malformed("no compression method"))
        );
        assert_eq!(
            patch(exts, &[0xff, 0xff]),
            Err(ParseError::Malformed("extensions length"))
        );
        assert_eq!(
            patch(sni_ext + 2, &[0xff, 0xff]),
            Err(ParseError::Malformed("server_name extension length"))
        );
        assert_eq!(
            patch(sni_ext + 4, &[0, 0xff]),
            Err(ParseError::Malformed("server name list length"))
        );
        assert_eq!(
            patch(sni_ext + 7, &[0, 0xff]),
            Err(ParseError::Malformed("server name"))
        );
        assert_eq!(
            patch(4, &[2]),
            Err(ParseError::Malformed("client version is not 3.x"))
        );
        // A handshake length past the copied bytes is not an error by itself: the payload is
        // just short of it, and the name comes before the end.
        assert_eq!(patch(1, &[0, 0xff, 0xff]), Ok(Some("a.example".to_owned())));
        // A handshake length shorter than the content.
        assert_eq!(
            patch(1, &[0, 0, 40]),
            Err(ParseError::Malformed("session id"))
        );

        let exts = [(0x0015, vec![0; 3])];
        let mut m = hello_message(Some(&exts));
        // Grow the handshake length by 2 and append 2 stray bytes.
        let len = u24(m[1], m[2], m[3]) + 2;
        m[1..4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&[0, 0]);
        assert_eq!(
            sni(&records(&m, 1 << 14)),
            Err(ParseError::Malformed("bytes after the extensions"))
        );
    }

    #[test]
    fn malformed_records() {
        assert_eq!(
            sni(&[0x16, 0x03, 0x01, 0x00, 0x00, 1]),
            Err(ParseError::Malformed("empty handshake record"))
        );
        assert_eq!(
            sni(&[0x16, 0x03, 0x01, 0x40, 0x01, 1]),
            Err(ParseError::Malformed("record longer than 2^14"))
        );
    }

    /// `cargo test -p swarmwall --release --lib l7::tls::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn throughput() {
        let payload = records(
            &hello_message(Some(&browser_exts("www.example.com"))),
            1 << 14,
        );
        const N: u32 = 1_000_000;
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for _ in 0..N {
            total += sni(std::hint::black_box(&payload))
                .unwrap()
                .map_or(0, |s| s.len());
        }
        let elapsed = start.elapsed();
        println!(
            "tls::sni: {} bytes, {:.0} ns/hello ({total})",
            payload.len(),
            elapsed.as_nanos() as f64 / f64::from(N)
        );
    }

    #[test]
    fn bad_names() {
        for (name, want) in [
            (&b""[..], Err(ParseError::Malformed("empty server name"))),
            (
                b"a\0b",
                Err(ParseError::Malformed(
                    "control byte or space in server name",
                )),
            ),
            (
                b"a b",
                Err(ParseError::Malformed(
                    "control byte or space in server name",
                )),
            ),
            (b"A.\xffB", Ok(Some("a.\u{fffd}b".to_owned()))),
        ] {
            let exts = [server_name_ext(&[(NAME_HOST, name)])];
            assert_eq!(
                sni(&records(&hello_message(Some(&exts)), 1 << 14)),
                want,
                "{name:?}"
            );
        }
        let exts = [server_name_ext(&[])];
        assert_eq!(
            sni(&records(&hello_message(Some(&exts)), 1 << 14)),
            Err(ParseError::Malformed("empty server name list"))
        );
    }
}
