#!/usr/bin/env python3
"""Writes the L7 parser corpus next to this script (deterministic: same bytes every run).

The payloads are built by hand to look like what the XDP program copies: browser, tool and bot
requests, pipelined and truncated ones, hostile ones, and TLS ClientHellos shaped like those of
current browsers (GREASE, permuted extensions, a post-quantum key share, ECH GREASE).
`expected.txt` says what each file must parse to; tests/l7_fuzz.rs checks it.
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(0x5EED)


def write(name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def crlf(*lines):
    return "".join(l + "\r\n" for l in lines) + "\r\n"


CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/131.0.0.0 Safari/537.36")
FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1")

chrome = crlf(
    "GET /catalog/shoes/running/?color=blue&size=42 HTTP/1.1",
    "Host: www.shop-example.com",
    "Connection: keep-alive",
    'sec-ch-ua: "Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    'sec-ch-ua-platform: "Windows"',
    "Upgrade-Insecure-Requests: 1",
    "User-Agent: " + CHROME_UA,
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "Sec-Fetch-Site: same-origin",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-User: ?1",
    "Sec-Fetch-Dest: document",
    "Referer: https://www.shop-example.com/catalog/shoes/",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; cart=3; _ga=GA1.1.1234567890.1700000000",
)
write("http-chrome-get.http", chrome)
# What a 256- and a 512-byte copy of it look like.
write("http-chrome-cut256.http", chrome.encode()[:256])
write("http-chrome-cut512.http", chrome.encode()[:512])

write("http-firefox-get.http", crlf(
    "GET /News//2024/index.html HTTP/1.1",
    "Host: News.Example.org",
    "User-Agent: " + FIREFOX_UA,
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: de,en-US;q=0.7,en;q=0.3",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Referer: https://www.search-example.net/",
    "DNT: 1",
    "Connection: keep-alive",
    "Upgrade-Insecure-Requests: 1",
    "Priority: u=0, i",
))

write("http-safari-ios.http", crlf(
    "GET /m/article/12345#comments HTTP/1.1",
    "Host: m.example.co.uk:8080",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Site: none",
    "Accept-Language: en-GB,en;q=0.9",
    "User-Agent: " + SAFARI_UA,
    "Accept-Encoding: gzip, deflate",
    "Connection: keep-alive",
))

write("http-curl.http", crlf(
    "GET /api/v1/health HTTP/1.1", "Host: 192.0.2.10:8080", "User-Agent: curl/8.5.0",
    "Accept: */*"))

write("http-wget-http10.http", crlf(
    "GET /downloads/tool.tar.gz HTTP/1.0", "User-Agent: Wget/1.21.4", "Accept: */*",
    "Accept-Encoding: identity", "Host: files.example.net", "Connection: Keep-Alive"))

write("http-googlebot.http", crlf(
    "GET /robots.txt HTTP/1.1", "Host: www.example.com",
    "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Accept: text/plain,text/html,*/*", "From: googlebot(at)googlebot.com",
    "Accept-Encoding: gzip,deflate,br"))

write("http-scanner-http10.http", "GET / HTTP/1.0\r\n\r\n")

write("http-python-post-body.http", crlf(
    "POST /login HTTP/1.1", "Host: app.example.com", "User-Agent: python-requests/2.32.3",
    "Accept-Encoding: gzip, deflate", "Accept: */*", "Connection: keep-alive",
    "Content-Length: 33", "Content-Type: application/x-www-form-urlencoded")
    + "username=admin&password=hunter2!!"
    + crlf("GET /dashboard HTTP/1.1", "Host: app.example.com",
           "User-Agent: python-requests/2.32.3"))

write("http-pipelined-4.http",
      crlf("GET /a.css HTTP/1.1", "Host: static.example.com", "User-Agent: pipeliner/1")
      + crlf("GET /b.js HTTP/1.1", "Host: static.example.com", "User-Agent: pipeliner/1")
      + crlf("HEAD /c.png HTTP/1.1", "Host: static.example.com", "User-Agent: pipeliner/1")
      + crlf("GET /d.woff2 HTTP/1.1", "Host: static.example.com", "User-Agent: pipeliner/1"))

write("http-chunked-pipelined.http",
      crlf("POST /upload HTTP/1.1", "Host: up.example.com", "Transfer-Encoding: chunked")
      + "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
      + crlf("GET /done HTTP/1.1", "Host: up.example.com"))

write("http-proxy-absolute.http", crlf(
    "GET http://Target.Example.com:8080/path//to/page?x=1 HTTP/1.1",
    "User-Agent: Mozilla/5.0 (compatible; proxy-client)", "Proxy-Connection: keep-alive"))

write("http-connect.http", crlf(
    "CONNECT Secure.Example.com:443 HTTP/1.1", "Host: secure.example.com:443",
    "User-Agent: curl/8.5.0", "Proxy-Connection: Keep-Alive"))

write("http-ipv6-host.http", crlf(
    "OPTIONS * HTTP/1.1", "Host: [2001:DB8::1]:8443", "User-Agent: probe/0.1"))

write("http-truncated-request-line.http",
      "GET /search?q=" + "a" * 200 + "&page=2 HTTP/1.")

write("http-hostile-long-header.http",
      "GET / HTTP/1.1\r\nHost: x.example\r\nX-Junk: " + "A" * 9000 + "\r\n\r\n")

write("http-hostile-long-line.http", "GET /" + "%41" * 3000 + " HTTP/1.1\r\nHost: a\r\n\r\n")

write("http-hostile-nul.http",
      b"GET /index.php HTTP/1.1\r\nHost: victim.example\r\nUser-Agent: x\x00y\r\n\r\n")

write("http-hostile-invalid-utf8.http",
      b"GET /\xc0\xaf..\xc0\xaf/etc/passwd HTTP/1.1\r\nHost: Victim.Example\r\n"
      b"User-Agent: \xff\xfe\xfd scanner\r\nReferer: http://\xe2\x28\xa1/\r\n\r\n")

write("http-hostile-smuggle.http", crlf(
    "POST /api HTTP/1.1", "Host: victim.example", "Content-Length: 4",
    "Transfer-Encoding: chunked") + "0\r\n\r\n" + crlf("GET /admin HTTP/1.1", "Host: localhost"))

write("http-hostile-lowercase-method.http", crlf("get / HTTP/1.1", "Host: a.example"))

write("http-h2-preface.bin", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")

write("garbage-random.bin", bytes(rng.randrange(256) for _ in range(300)))


# --- TLS ---------------------------------------------------------------------------------------

def u8(n): return struct.pack(">B", n)
def u16(n): return struct.pack(">H", n)
def u24(n): return struct.pack(">I", n)[1:]
def vec8(b): return u8(len(b)) + b
def vec16(b): return u16(len(b)) + b


def grease():
    g = rng.randrange(16)
    return (g << 12) | 0x0a00 | (g << 4) | 0x0a


def ext(ty, data=b""):
    return u16(ty) + vec16(data)


def sni_ext(host):
    return ext(0x0000, vec16(u8(0) + vec16(host.encode())))


def hello(exts, suites, record_chunks=None):
    body = b"\x03\x03" + bytes(rng.randrange(256) for _ in range(32))
    body += vec8(bytes(rng.randrange(256) for _ in range(32)))
    body += vec16(b"".join(u16(s) for s in suites))
    body += vec8(b"\x00")
    body += vec16(b"".join(exts))
    msg = b"\x01" + u24(len(body)) + body
    chunks = record_chunks or [len(msg)]
    out, pos = b"", 0
    for i, n in enumerate(chunks):
        part = msg[pos:] if i == len(chunks) - 1 else msg[pos:pos + n]
        pos += len(part)
        out += b"\x16\x03\x01" + vec16(part)
    return out


CHROME_SUITES = [grease(), 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035]
MLKEM = 0x11ec


def chrome_exts(host, sni_late):
    g1, g2 = grease(), grease()
    key_share = vec16(u16(g1) + vec16(b"\x00") + u16(MLKEM)
                      + vec16(bytes(rng.randrange(256) for _ in range(1216)))
                      + u16(0x001d) + vec16(bytes(rng.randrange(256) for _ in range(32))))
    middle = [
        ext(0x0017),
        ext(0xff01, b"\x00"),
        ext(0x000a, vec16(u16(g1) + u16(MLKEM) + u16(0x1d) + u16(0x17) + u16(0x18))),
        ext(0x000b, vec8(b"\x00")),
        ext(0x0023),
        ext(0x0010, vec16(vec8(b"h2") + vec8(b"http/1.1"))),
        ext(0x0005, b"\x01\x00\x00\x00\x00"),
        ext(0x000d, vec16(b"".join(u16(s) for s in
                                   [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]))),
        ext(0x0012),
        ext(0x0033, key_share),
        ext(0x002d, vec8(b"\x01")),
        ext(0x002b, vec8(u16(g2) + u16(0x0304) + u16(0x0303))),
        ext(0x001b, vec8(u16(0x0002))),
        ext(0x44cd, vec16(vec8(b"h2"))),
        ext(0xfe0d, b"\x00\x00\x01\x00\x01\x9c" + vec16(bytes(rng.randrange(256) for _ in range(32)))
            + vec16(bytes(rng.randrange(256) for _ in range(144)))),
    ]
    # Chrome permutes its extensions; put the name early or after the 1.2 KB key share.
    if sni_late:
        middle.append(sni_ext(host))
    else:
        middle.insert(0, sni_ext(host))
    return [ext(grease())] + middle + [ext(grease(), b"\x00")]


chrome_early = hello(chrome_exts("www.shop-example.com", False), CHROME_SUITES)
write("tls-chrome-sni-early.tls", chrome_early)
chrome_late = hello(chrome_exts("Login.Example.COM", True), CHROME_SUITES)
write("tls-chrome-sni-late.tls", chrome_late)
# The same hello as a 512-byte copy sees it: the name is past the key share, out of reach.
write("tls-chrome-sni-late-cut512.tls", chrome_late[:512])

FIREFOX_SUITES = [0x1301, 0x1303, 0x1302, 0xc02b, 0xc02f, 0xcca9, 0xcca8, 0xc02c, 0xc030, 0xc00a,
                  0xc009, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035]
firefox = hello([
    sni_ext("news.example.org"),
    ext(0x0017),
    ext(0xff01, b"\x00"),
    ext(0x000a, vec16(u16(MLKEM) + u16(0x1d) + u16(0x17) + u16(0x18) + u16(0x19) + u16(0x0100))),
    ext(0x000b, vec8(b"\x00")),
    ext(0x0010, vec16(vec8(b"h2") + vec8(b"http/1.1"))),
    ext(0x0005, b"\x01\x00\x00\x00\x00"),
    ext(0x0022, vec16(u16(0x0403) + u16(0x0503) + u16(0x0603) + u16(0x0203))),
    ext(0x0033, vec16(u16(MLKEM) + vec16(bytes(rng.randrange(256) for _ in range(1216)))
                      + u16(0x1d) + vec16(bytes(rng.randrange(256) for _ in range(32))))),
    ext(0x002b, vec8(u16(0x0304) + u16(0x0303))),
    ext(0x000d, vec16(b"".join(u16(s) for s in [0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806]))),
    ext(0x002d, vec8(b"\x01")),
    ext(0x001c, u16(0x4001)),
    ext(0x001b, vec8(u16(0x0001) + u16(0x0002) + u16(0x0003))),
], FIREFOX_SUITES)
write("tls-firefox.tls", firefox)
write("tls-firefox-cut256.tls", firefox[:256])

# curl to an IP address: no server_name at all.
write("tls-curl-ip-nosni.tls", hello([
    ext(0x000b, vec8(b"\x00\x01\x02")),
    ext(0x000a, vec16(u16(0x1d) + u16(0x17) + u16(0x1e) + u16(0x19) + u16(0x18))),
    ext(0x0010, vec16(vec8(b"http/1.1"))),
    ext(0x0016),
    ext(0x0017),
    ext(0x000d, vec16(u16(0x0403) + u16(0x0804))),
    ext(0x002b, vec8(u16(0x0304) + u16(0x0303))),
    ext(0x002d, vec8(b"\x01")),
    ext(0x0033, vec16(u16(0x1d) + vec16(bytes(rng.randrange(256) for _ in range(32))))),
], [0x1302, 0x1303, 0x1301, 0xc02c, 0xc030]))

# A hello split over three records (an evasion trick; legal).
write("tls-fragmented-records.tls",
      hello([ext(grease()), sni_ext("split.example.net"), ext(0x0017)],
            [0x1301, 0x1302], record_chunks=[40, 60, 0]))

# Hostile: the server_name extension claims more bytes than the extension block has.
hostile = bytearray(hello([sni_ext("evil.example")], [0x1301]))
idx = hostile.find(b"\x00\x00\x00", 5 + 4 + 2 + 32 + 33 + 2 + 2 + 2)
hostile[idx + 2:idx + 4] = b"\xff\xf0"
write("tls-hostile-ext-length.tls", bytes(hostile))

# An SSLv2-compatible hello (no SNI possible).
write("tls-sslv2-hello.bin", b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10"
      + b"\x07\x00\xc0\x05\x00\x80\x03\x00\x80\x01\x00\x80\x06\x00\x40\x04\x00\x80\x02\x00\x80"
      + bytes(16))
