//! A TLS 1.3 ClientHello the shape of a modern browser's: a post-quantum key share
//! (X25519MLKEM768, 1216 bytes, next to an X25519 share) makes it about 1.8 KB, so it spans two
//! TCP segments, and its `server_name` comes after the first 1500 bytes — the case the kernel
//! must follow into the continuation segment.

/// Where the SNI extension must start at the earliest, in bytes from the record's start.
pub const SNI_AFTER: usize = 1500;

/// A whole TLS record (header included) holding a ClientHello for `sni` with ALPN `h2`,
/// `http/1.1`, about 1.8 KB long, whose `server_name` extension starts after [`SNI_AFTER`].
pub fn browser_client_hello(sni: &str) -> Vec<u8> {
    let mut exts = Vec::new();
    // supported_versions: TLS 1.3, 1.2.
    ext(&mut exts, 43, &[4, 0x03, 0x04, 0x03, 0x03]);
    // supported_groups: X25519MLKEM768, x25519, secp256r1.
    ext(&mut exts, 10, &[0, 6, 0x11, 0xec, 0x00, 0x1d, 0x00, 0x17]);
    // key_share: X25519MLKEM768 (1216 bytes) and x25519 (32 bytes).
    let mut shares = Vec::new();
    for (group, len) in [(0x11ecu16, 1216usize), (0x001d, 32)] {
        shares.extend(group.to_be_bytes());
        shares.extend((len as u16).to_be_bytes());
        shares.extend((0..len).map(|i| (i * 7 + 3) as u8));
    }
    let mut ks = (shares.len() as u16).to_be_bytes().to_vec();
    ks.extend(shares);
    ext(&mut exts, 51, &ks);
    // signature_algorithms, as filler a browser really sends before the name.
    let sigs: Vec<u8> = [
        0x0403u16, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ]
    .iter()
    .flat_map(|s| s.to_be_bytes())
    .collect();
    let mut sa = (sigs.len() as u16).to_be_bytes().to_vec();
    sa.extend(sigs);
    ext(&mut exts, 13, &sa);
    // padding (RFC 7685) up to where the name must start at the earliest.
    let head = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 2 * SUITES.len() + 2 + 2;
    let pad = (SNI_AFTER + 16).saturating_sub(head + exts.len() + 4);
    ext(&mut exts, 21, &vec![0; pad]);
    let sni_at = head + exts.len();
    // server_name: one host_name.
    let name = sni.as_bytes();
    let mut sn = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sn.push(0);
    sn.extend((name.len() as u16).to_be_bytes());
    sn.extend(name);
    ext(&mut exts, 0, &sn);
    // ALPN: h2, http/1.1.
    let mut alpn = vec![0, 12, 2];
    alpn.extend(b"h2");
    alpn.push(8);
    alpn.extend(b"http/1.1");
    ext(&mut exts, 16, &alpn);
    // session_ticket, empty; then a psk_key_exchange_modes like a browser's.
    ext(&mut exts, 35, &[]);
    ext(&mut exts, 45, &[1, 1]);
    // A resumption-sized filler so the hello lands in the browsers' 1.7–1.9 KB range.
    ext(&mut exts, 0xfe0d, &[0x5a; 200]);

    let mut body = vec![0x03, 0x03];
    body.extend((0..32u8).map(|i| i.wrapping_mul(13)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(31)));
    body.extend(((2 * SUITES.len()) as u16).to_be_bytes());
    for s in SUITES {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);

    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    assert!(sni_at > SNI_AFTER, "the name starts at {sni_at}");
    assert!((1700..=1900).contains(&record.len()), "{}", record.len());
    record
}

const SUITES: [u16; 15] = [
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];

fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// A TLS client's ClientHello shape: what goes into its JA4 (suites, extensions, ALPN, signature
/// algorithms) and its size (a post-quantum key share makes it span two segments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// A name for labels and messages (`chrome-124`).
    pub name: &'static str,
    /// The `User-Agent` this client sends over the connection.
    pub ua: &'static str,
    /// Cipher suites in order (GREASE added first when [`Profile::grease`]).
    pub suites: &'static [u16],
    /// Extension types in order (GREASE added first and last when [`Profile::grease`]).
    pub extensions: &'static [u16],
    /// `signature_algorithms`.
    pub sigs: &'static [u16],
    /// ALPN protocols offered; empty: no ALPN extension.
    pub alpn: &'static [&'static str],
    /// GREASE values (RFC 8701), as Chromium and Safari send them.
    pub grease: bool,
    /// An X25519MLKEM768 key share (1216 bytes) besides X25519.
    pub pq: bool,
}

const CHROME_SUITES: &[u16] = &[
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];
const CHROME_EXTS: &[u16] = &[
    0, 23, 65281, 10, 11, 35, 16, 5, 13, 18, 51, 45, 43, 27, 17513, 65037,
];
const FIREFOX_SUITES: &[u16] = &[
    0x1301, 0x1303, 0x1302, 0xc02b, 0xc02f, 0xcca9, 0xcca8, 0xc02c, 0xc030, 0xc00a, 0xc009, 0xc013,
    0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
];
const FIREFOX_EXTS: &[u16] = &[
    0, 23, 65281, 10, 11, 35, 16, 5, 34, 51, 43, 13, 45, 28, 65037,
];
const SAFARI_SUITES: &[u16] = &[
    0x1301, 0x1302, 0x1303, 0xc02c, 0xc02b, 0xcca9, 0xc030, 0xc02f, 0xcca8, 0xc00a, 0xc009, 0xc014,
    0xc013, 0x009d, 0x009c, 0x0035, 0x002f, 0xc008, 0xc012, 0x000a,
];
const SAFARI_EXTS: &[u16] = &[0, 23, 65281, 10, 11, 16, 5, 13, 18, 51, 45, 43, 27, 21];
const SIGS: &[u16] = &[
    0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
];
const FIREFOX_SIGS: &[u16] = &[
    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
];

/// Browser profiles, each with its own JA4: what legitimate visitors send.
pub const BROWSER_PROFILES: [Profile; 7] = [
    Profile {
        name: "chrome-124",
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        suites: CHROME_SUITES,
        extensions: CHROME_EXTS,
        sigs: SIGS,
        alpn: &["h2", "http/1.1"],
        grease: true,
        pq: true,
    },
    Profile {
        name: "chrome-117",
        ua: "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        suites: CHROME_SUITES,
        extensions: &[
            0, 23, 65281, 10, 11, 35, 16, 5, 13, 18, 51, 45, 43, 27, 17513, 21,
        ],
        sigs: SIGS,
        alpn: &["h2", "http/1.1"],
        grease: true,
        pq: false,
    },
    Profile {
        name: "firefox-125",
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        suites: FIREFOX_SUITES,
        extensions: FIREFOX_EXTS,
        sigs: FIREFOX_SIGS,
        alpn: &["h2", "http/1.1"],
        grease: false,
        pq: true,
    },
    Profile {
        name: "firefox-115",
        ua: "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
        suites: FIREFOX_SUITES,
        extensions: &[0, 23, 65281, 10, 11, 35, 16, 5, 34, 51, 43, 13, 45, 28, 21],
        sigs: FIREFOX_SIGS,
        alpn: &["h2", "http/1.1"],
        grease: false,
        pq: false,
    },
    Profile {
        name: "safari-17",
        ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        suites: SAFARI_SUITES,
        extensions: SAFARI_EXTS,
        sigs: SIGS,
        alpn: &["h2", "http/1.1"],
        grease: true,
        pq: false,
    },
    Profile {
        name: "safari-ios-17",
        ua: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        suites: SAFARI_SUITES,
        extensions: &[0, 23, 65281, 10, 11, 16, 5, 13, 18, 51, 45, 43, 21],
        sigs: SIGS,
        alpn: &["h2", "http/1.1"],
        grease: true,
        pq: false,
    },
    Profile {
        name: "edge-124",
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
        suites: CHROME_SUITES,
        extensions: &[
            0, 23, 65281, 10, 11, 35, 16, 5, 13, 18, 51, 45, 43, 27, 65037,
        ],
        sigs: SIGS,
        alpn: &["h2", "http/1.1"],
        grease: true,
        pq: true,
    },
];

/// How often each of [`BROWSER_PROFILES`] is picked, in the same order.
pub const BROWSER_WEIGHTS: [u32; 7] = [30, 8, 12, 4, 12, 20, 14];

/// A bot's HTTP library (Go's `net/http` shape: no GREASE, a post-quantum share, HTTP/1.1
/// only): one JA4 for a whole swarm.
pub const BOT_PROFILE: Profile = Profile {
    name: "go-http-client",
    ua: "Go-http-client/1.1",
    suites: &[
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc009, 0xc013,
        0xc00a, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ],
    extensions: &[0, 5, 10, 11, 13, 65281, 23, 18, 43, 51, 16],
    sigs: SIGS,
    alpn: &["http/1.1"],
    grease: false,
    pq: true,
};

/// A TLS record holding `profile`'s ClientHello for `sni`; `nonce` varies the random, session
/// id, key shares and GREASE values (not the JA4), as two connections of one client differ.
pub fn client_hello(profile: &Profile, sni: &str, nonce: u64) -> Vec<u8> {
    let mut x = nonce ^ 0x5357_4152_4d57_414c;
    let mut next = move || {
        // SplitMix64.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let grease = |r: u64| {
        let n = (r % 16) as u16;
        (n << 12) | 0x0a00 | (n << 4) | 0x0a
    };
    let g = [grease(next()), grease(next()), grease(next())];
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| next() as u8).collect() };
    let random = bytes(32);
    let session = bytes(32);
    let x25519 = bytes(32);
    let mlkem = bytes(1216);
    let mut exts = Vec::new();
    if profile.grease {
        ext(&mut exts, g[1], &[]);
    }
    let u16s = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_be_bytes()).collect() };
    let with_len16 = |b: Vec<u8>| -> Vec<u8> {
        let mut out = (b.len() as u16).to_be_bytes().to_vec();
        out.extend(b);
        out
    };
    for &ty in profile.extensions {
        let data: Vec<u8> = match ty {
            0 => {
                let name = sni.as_bytes();
                let mut sn = ((name.len() + 3) as u16).to_be_bytes().to_vec();
                sn.push(0);
                sn.extend((name.len() as u16).to_be_bytes());
                sn.extend(name);
                sn
            }
            10 => {
                let mut groups = Vec::new();
                if profile.grease {
                    groups.push(g[0]);
                }
                if profile.pq {
                    groups.push(0x11ec);
                }
                groups.extend([0x001d, 0x0017, 0x0018]);
                with_len16(u16s(&groups))
            }
            11 => vec![1, 0],
            13 => with_len16(u16s(profile.sigs)),
            16 => {
                let mut list = Vec::new();
                for p in profile.alpn {
                    list.push(p.len() as u8);
                    list.extend(p.as_bytes());
                }
                with_len16(list)
            }
            5 => vec![1, 0, 0, 0, 0],
            27 => vec![2, 0, 2],
            28 => vec![0x40, 0x01],
            34 => with_len16(u16s(&[0x0403, 0x0503, 0x0603, 0x0203])),
            43 => {
                let mut v = Vec::new();
                if profile.grease {
                    v.push(g[2]);
                }
                v.extend([0x0304, 0x0303]);
                let b = u16s(&v);
                let mut out = vec![b.len() as u8];
                out.extend(b);
                out
            }
            45 => vec![1, 1],
            51 => {
                let mut shares = Vec::new();
                if profile.grease {
                    shares.extend(g[0].to_be_bytes());
                    shares.extend([0, 1, 0]);
                }
                if profile.pq {
                    shares.extend(0x11ecu16.to_be_bytes());
                    shares.extend(((mlkem.len() + 32) as u16).to_be_bytes());
                    shares.extend(&mlkem);
                    shares.extend(&x25519);
                }
                shares.extend(0x001du16.to_be_bytes());
                shares.extend(32u16.to_be_bytes());
                shares.extend(&x25519);
                with_len16(shares)
            }
            65281 => vec![0],
            17513 => vec![0, 3, 2, b'h', b'2'],
            65037 => vec![0x5a; 218],
            // padding: to 512 bytes, as BoringSSL pads hellos between 256 and 511 bytes.
            21 => vec![0; 64],
            _ => Vec::new(),
        };
        ext(&mut exts, ty, &data);
    }
    if profile.grease {
        ext(&mut exts, g[1] ^ 0x1010, &[0]);
    }
    let mut body = vec![0x03, 0x03];
    body.extend(&random);
    body.push(32);
    body.extend(&session);
    let mut suites = Vec::new();
    if profile.grease {
        suites.push(g[0]);
    }
    suites.extend_from_slice(profile.suites);
    body.extend(((2 * suites.len()) as u16).to_be_bytes());
    body.extend(u16s(&suites));
    body.extend([1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_browser_sized_with_a_late_name() {
        let h = browser_client_hello("shop.example");
        let at = h.windows(12).position(|w| w == b"shop.example").unwrap();
        assert!(at > SNI_AFTER);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize + 5, h.len());
    }
}
