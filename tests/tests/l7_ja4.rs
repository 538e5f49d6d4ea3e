//! JA4 through the real kernel: a whole ClientHello sent to a TLS port is sampled by the XDP
//! program (`BPF_PROG_TEST_RUN`), and the userspace event it becomes carries the SNI and the
//! JA4 that the specification's worked example publishes. Needs root.

mod common;

use common::{ip, small};
use swarmwall::{Dataplane, Prog, l7};
use swarmwall_integration::{packets::Frame, require_root};
use swarmwall_maps::L7_TLS;

/// The hello of the JA4 specification's example (`technical_details/JA4.md` of FoxIO-LLC/ja4):
/// its 15 cipher suites and 16 extensions in their original order, plus GREASE values, which
/// JA4 ignores.
fn spec_hello(host: &str) -> Vec<u8> {
    let suites: [u16; 16] = [
        0x4a4a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let u16s = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_be_bytes()).collect() };
    let with_len = |n: usize, b: Vec<u8>| -> Vec<u8> {
        let mut out = if n == 1 {
            vec![b.len() as u8]
        } else {
            (b.len() as u16).to_be_bytes().to_vec()
        };
        out.extend(b);
        out
    };
    let sni = with_len(2, [vec![0], with_len(2, host.as_bytes().to_vec())].concat());
    let alpn = with_len(
        2,
        [
            with_len(1, b"h2".to_vec()),
            with_len(1, b"http/1.1".to_vec()),
        ]
        .concat(),
    );
    let sigs = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let exts: Vec<(u16, Vec<u8>)> = vec![
        (0xaaaa, vec![]),
        (0x001b, vec![2, 0, 2]),
        (0x0000, sni),
        (0x0033, vec![0, 0]),
        (0x0010, alpn),
        (0x4469, vec![0, 3, 2, b'h', b'2']),
        (0x0017, vec![]),
        (0x002d, vec![1, 1]),
        (0x000d, with_len(2, u16s(&sigs))),
        (0x0005, vec![1, 0, 0, 0, 0]),
        (0x0023, vec![]),
        (0x0012, vec![]),
        (0x002b, with_len(1, u16s(&[0x7a7a, 0x0304, 0x0303]))),
        (0xff01, vec![0]),
        (0x000b, vec![1, 0]),
        (0x000a, with_len(2, u16s(&[0x001d, 0x0017]))),
        (0x0015, vec![0; 7]),
    ];
    let mut block = Vec::new();
    for (ty, data) in exts {
        block.extend(ty.to_be_bytes());
        block.extend((data.len() as u16).to_be_bytes());
        block.extend(data);
    }
    let mut body = vec![3, 3];
    body.extend([0x11; 32]);
    body.extend(with_len(1, vec![0x22; 32]));
    body.extend(with_len(2, u16s(&suites)));
    body.extend([1, 0]);
    body.extend(with_len(2, block));
    let mut msg = vec![1];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    let mut record = vec![0x16, 3, 1];
    record.extend(with_len(2, msg));
    record
}

#[test]
fn sampled_hello_yields_sni_and_the_published_ja4() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    let hello = spec_hello("Example.COM");
    assert!(hello.len() < swarmwall_maps::L7_SNAP, "{}", hello.len());
    for (src, dst) in [
        ("192.0.2.1", "203.0.113.10"),
        ("2001:db8::1", "2001:db8::10"),
    ] {
        let f = Frame::tcp(ip(src), ip(dst), 40000, 443)
            .tcp_flags(0x18)
            .payload(&hello)
            .build();
        dp.test_run(Prog::Main, &f, 1).unwrap();
        let evs: Vec<_> = std::iter::from_fn(|| reader.next_event()).collect();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, L7_TLS);
        let reqs = l7::from_sample(&evs[0]);
        assert_eq!(reqs.len(), 1);
        let ev = &reqs[0];
        assert_eq!(
            (ev.kind, ev.src, ev.dst_port),
            (l7::Kind::TlsHello, ip(src), 443)
        );
        assert_eq!(ev.host.as_deref(), Some("example.com"));
        assert_eq!(
            ev.ja4.as_deref(),
            Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
        );
    }
    // The same hello cut short (what one segment of a longer hello looks like): the SNI came
    // first and is still read, the fingerprint needs the whole hello.
    let cut = &hello[..hello.len() - 20];
    let f = Frame::tcp(ip("192.0.2.2"), ip("203.0.113.10"), 40001, 443)
        .tcp_flags(0x18)
        .payload(cut)
        .build();
    dp.test_run(Prog::Main, &f, 1).unwrap();
    let evs: Vec<_> = std::iter::from_fn(|| reader.next_event()).collect();
    let ev = &l7::from_sample(&evs[0])[0];
    assert_eq!(ev.host.as_deref(), Some("example.com"));
    assert_eq!(ev.ja4, None);
}
