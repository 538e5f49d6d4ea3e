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
