"""The PROXY protocol (--proxy-protocol off|v1|v2|auto, --proxy-allow-from), end to end
through the real `ferricorn` command (issue 8, "Proxies"):

- raw sockets on 127.0.0.1 send hand-made v1 and v2 headers (TCP4, TCP6, UNKNOWN, LOCAL,
  TLVs), good and malformed, to WSGI and ASGI apps (tests/apps/proxy_app.py) that answer
  with the client address and scheme the server gave them;
- a real HAProxy (`haproxy -f cfg -db`, Debian's `haproxy` package; skipped when it is
  missing) on free loopback ports sends `send-proxy` / `send-proxy-v2` in HTTP and TCP
  mode, over TCP and over a UNIX socket.

What the server must do (README, reference section 6.3): the header's client address is
REMOTE_ADDR/REMOTE_PORT (ASGI `client`) for every request of the connection; UNKNOWN (v1)
and LOCAL (v2) keep the real peer; PROXY_PROTOCOL, PROXY_ADDR and PROXY_PORT are set as
Gunicorn sets them (PROXY_ADDR/PROXY_PORT: the header's destination address); a malformed
header is answered 400 and the connection closed, without calling the app; a header from a
peer outside --proxy-allow-from is answered 403; a connection without a header is served
with its real address, as Gunicorn does."""

import ipaddress
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import free_port, recv_all, split_response
from test_http11 import Conn
from test_tls import certs, client_ctx, tls_args  # noqa: F401 - `certs` is the session fixture

WSGI = "proxy_app:app"
ASGI = "proxy_app:asgi"
TIMEOUT = 5.0

# ---------------------------------------------------------------------------------------
# building headers


def v1(proto="TCP4", src="192.0.2.7", dst="198.51.100.9", sport=4711, dport=8443):
    if proto == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def ssl_tlv():
    """PP2_TYPE_SSL: client flags (SSL, cert in connection), verify result, sub-TLVs."""
    sub = tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3") + tlv(PP2_SUBTYPE_SSL_CN, b"client.example")
    sub += tlv(PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256")
    return tlv(PP2_TYPE_SSL, bytes([0x01 | 0x02]) + struct.pack("!I", 0) + sub)


def v2(cmd=1, fam=None, src="192.0.2.7", dst=None, sport=4711, dport=8443, tlvs=b"", version=2, length=None, body=None):
    """A v2 header; `fam` defaults from the address family (0x11 TCP over IPv4, 0x21 TCP
    over IPv6); `body` replaces the address block, `length` the length field."""
    if body is None:
        s = ipaddress.ip_address(src)
        d = ipaddress.ip_address(dst or ("198.51.100.9" if s.version == 4 else "2001:db8::9"))
        body = s.packed + d.packed + struct.pack("!HH", sport, dport)
        if fam is None:
            fam = 0x11 if s.version == 4 else 0x21
    body += tlvs
    fam = 0x00 if fam is None else fam
    n = len(body) if length is None else length
    return V2_SIG + bytes([(version << 4) | cmd, fam]) + struct.pack("!H", n) + body


def get(path="/", close=True):
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n"


# ---------------------------------------------------------------------------------------
# talking to the server


def exchange(srv, data, timeout=TIMEOUT, shut_write=False):
    """Sends `data` on a new connection and returns everything answered until the server
    closes; b"RESET" when it resets the connection instead."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((srv.host, srv.port))
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        try:
            return recv_all(s, timeout)
        except ConnectionResetError:
            return b"RESET"
    finally:
        s.close()


def ask(srv, prefix, path="/", **kw):
    """One request behind `prefix` (a PROXY header, or b""); must be a 200: its JSON body."""
    raw = exchange(srv, prefix + get(path), **kw)
    status, body = split_response(raw)
    assert status == 200, raw[:500]
    return json.loads(body)


def start(start_server, mode="auto", *args, app=WSGI):
    args = ("--proxy-protocol", mode) + args if mode is not None else args
    return start_server(app, "-w", "1", *args)


def wsgi_view(env):
    return env["REMOTE_ADDR"], env["REMOTE_PORT"], env["wsgi.url_scheme"]


def asgi_view(scope):
    return tuple(scope["client"]), scope["scheme"]


def assert_refused(raw, status=400):
    """The documented answer to a refused header: `status` with Connection: close, then the
    connection closes (the app is never called); never a served request."""
    assert raw != b"RESET", "the server reset the connection instead of answering"
    code, body = split_response(raw)
    assert code == status, raw[:500]
    assert b"connection: close" in raw.split(b"\r\n\r\n", 1)[0].lower(), raw[:500]
    assert b"REMOTE_ADDR" not in raw and b"client" not in body, raw[:500]


# ---------------------------------------------------------------------------------------
# v1


def test_v1_tcp4_sets_the_client_address(start_server):
    srv = start(start_server, "v1")
    env = ask(srv, v1("TCP4", "192.0.2.7", "198.51.100.9", 4711, 8443))
    assert wsgi_view(env) == ("192.0.2.7", "4711", "http")
    assert env["PROXY_PROTOCOL"] == "TCP4"


def test_v1_tcp6_sets_the_client_address(start_server):
    srv = start(start_server, "v1")
    env = ask(srv, v1("TCP6", "2001:db8::7", "2001:db8::9", 65535, 443))
    assert wsgi_view(env) == ("2001:db8::7", "65535", "http")
    assert env["PROXY_PROTOCOL"] == "TCP6"


def test_v1_unknown_keeps_the_real_peer(start_server):
    srv = start(start_server, "v1")
    s = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
    port = s.getsockname()[1]
    s.sendall(b"PROXY UNKNOWN\r\n" + get())
    status, body = split_response(recv_all(s))
    s.close()
    assert status == 200
    env = json.loads(body)
    assert wsgi_view(env) == ("127.0.0.1", str(port), "http")
    # "PROXY UNKNOWN" may carry the rest of a line, which receivers must ignore.
    env = ask(srv, b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_addr_and_port_are_the_headers_destination_as_in_gunicorn(start_server):
    """Gunicorn's environ has PROXY_ADDR/PROXY_PORT = the destination fields of the header
    (the address the proxy accepted the client on), for v1 and v2 alike."""
    srv = start(start_server, "auto")
    env = ask(srv, v1("TCP4", "192.0.2.7", "198.51.100.9", 4711, 8443))
    assert (env["PROXY_ADDR"], env["PROXY_PORT"]) == ("198.51.100.9", "8443"), env
    env = ask(srv, v2(src="2001:db8::7", dst="2001:db8::9", sport=4711, dport=443))
    assert (env["PROXY_ADDR"], env["PROXY_PORT"]) == ("2001:db8::9", "443"), env


# ---------------------------------------------------------------------------------------
# v2


def test_v2_tcp4_with_tlvs(start_server):
    srv = start(start_server, "v2")
    tlvs = tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"www.example.com") + ssl_tlv()
    tlvs += tlv(PP2_TYPE_UNIQUE_ID, os.urandom(16)) + tlv(PP2_TYPE_NOOP, b"\0" * 7)
    env = ask(srv, v2(src="192.0.2.7", dst="198.51.100.9", sport=4711, dport=8443, tlvs=tlvs))
    assert wsgi_view(env) == ("192.0.2.7", "4711", "http")
    assert env["PROXY_PROTOCOL"] == "TCP4"


def test_v2_tcp6_with_tlvs(start_server):
    srv = start(start_server, "v2")
    tlvs = tlv(PP2_TYPE_AUTHORITY, b"example.org") + ssl_tlv() + tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
    env = ask(srv, v2(src="2001:db8::7", dst="2001:db8::9", sport=1, dport=443, tlvs=tlvs))
    assert wsgi_view(env) == ("2001:db8::7", "1", "http")
    assert env["PROXY_PROTOCOL"] == "TCP6"


def test_v2_local_keeps_the_real_peer(start_server):
    srv = start(start_server, "v2")
    s = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
    port = s.getsockname()[1]
    # A LOCAL header (a health check) may still carry addresses: they must be ignored.
    s.sendall(v2(cmd=0, src="192.0.2.7", sport=4711) + get())
    status, body = split_response(recv_all(s))
    s.close()
    assert status == 200
    env = json.loads(body)
    assert wsgi_view(env) == ("127.0.0.1", str(port), "http")
    assert env["PROXY_PROTOCOL"] == "LOCAL"
    assert ask(srv, v2(cmd=0, body=b""))["REMOTE_ADDR"] == "127.0.0.1"


def test_v2_unspec_keeps_the_real_peer(start_server):
    srv = start(start_server, "v2")
    env = ask(srv, v2(cmd=1, fam=0x00, body=b""))
    assert env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize("fam", [0x31, 0x12], ids=["unix-stream", "udp4"])
def test_v2_other_valid_families_fall_back_to_the_real_peer(start_server, fam):
    """The PROXY spec (2.2): a receiver that does not support one of the valid
    family/transport combinations (AF_UNIX, DGRAM) "falls back to the UNSPEC mode" and
    uses the real connection endpoints. HAProxy sends AF_UNIX for clients of a UNIX-socket
    frontend. (Gunicorn refuses them.)"""
    srv = start(start_server, "v2")
    body = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0") if fam == 0x31 else (
        ipaddress.ip_address("192.0.2.7").packed + ipaddress.ip_address("198.51.100.9").packed + struct.pack("!HH", 53, 53)
    )
    raw = exchange(srv, v2(fam=fam, body=body) + get())
    assert raw != b"RESET", "the connection was reset"
    status, resp = split_response(raw)
    assert status == 200, raw[:300]
    assert json.loads(resp)["REMOTE_ADDR"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------
# modes


def test_auto_accepts_both_versions_and_the_bare_flag_means_auto(start_server):
    srv = start_server(WSGI, "-w", "1", "--proxy-protocol")
    assert ask(srv, v1(src="192.0.2.1"))["REMOTE_ADDR"] == "192.0.2.1"
    assert ask(srv, v2(src="192.0.2.2"))["REMOTE_ADDR"] == "192.0.2.2"
    srv2 = start(start_server, "auto")
    assert ask(srv2, v1(src="192.0.2.3"))["REMOTE_ADDR"] == "192.0.2.3"
    assert ask(srv2, v2(src="2001:db8::4"))["REMOTE_ADDR"] == "2001:db8::4"


def test_v1_mode_refuses_a_v2_header(start_server):
    srv = start(start_server, "v1")
    raw = exchange(srv, v2(src="192.0.2.7") + get())
    assert_refused(raw, 400)
    assert b"192.0.2.7" not in raw


def test_v2_mode_refuses_a_v1_header(start_server):
    srv = start(start_server, "v2")
    raw = exchange(srv, v1(src="192.0.2.7") + get())
    assert_refused(raw, 400)
    assert b"192.0.2.7" not in raw


def test_off_by_default_a_header_is_not_honoured(start_server):
    srv = start(start_server, None)
    raw = exchange(srv, v1(src="192.0.2.7") + get())
    assert_refused(raw, 400)
    srv2 = start(start_server, "off")
    assert_refused(exchange(srv2, v2(src="192.0.2.7") + get()), 400)


@pytest.mark.parametrize("mode", ["v1", "v2", "auto"])
def test_a_connection_without_a_header_is_served_with_its_real_address(start_server, mode):
    srv = start(start_server, mode)
    s = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
    port = s.getsockname()[1]
    s.sendall(get())
    status, body = split_response(recv_all(s))
    s.close()
    assert status == 200
    env = json.loads(body)
    assert wsgi_view(env) == ("127.0.0.1", str(port), "http")
    assert env["PROXY_PROTOCOL"] is None


# ---------------------------------------------------------------------------------------
# keep-alive: the header's address for every request of the connection


@pytest.mark.parametrize(
    "header", [v1(src="192.0.2.7", sport=4711), v2(src="192.0.2.7", sport=4711, tlvs=ssl_tlv())], ids=["v1", "v2"]
)
def test_every_request_of_a_keepalive_connection_sees_the_header(start_server, header):
    srv = start(start_server, "auto")
    with Conn(srv) as c:
        c.send(header + get(close=False))
        seen = [c.response()]
        for _ in range(2):
            c.send(get(close=False))
            seen.append(c.response())
        # A pipelined pair too.
        c.send(get(close=False) + get(close=True))
        seen += [c.response(), c.response()]
    assert [r.status for r in seen] == [200] * 5
    envs = [json.loads(r.body) for r in seen]
    assert {wsgi_view(e) for e in envs} == {("192.0.2.7", "4711", "http")}
    assert len({e["pid"] for e in envs}) == 1


def test_a_second_proxy_header_on_the_same_connection_is_not_a_header(start_server):
    """Only the start of a connection may carry a header: a later "PROXY ..." line is a
    (bad) request line, so a client behind the proxy cannot change its address."""
    srv = start(start_server, "v1")
    with Conn(srv) as c:
        c.send(v1(src="192.0.2.7") + get(close=False))
        assert json.loads(c.response().body)["REMOTE_ADDR"] == "192.0.2.7"
        c.send(v1(src="203.0.113.66") + get(close=True))
        r = c.response()
    assert r.status == 400 and b"203.0.113.66" not in r.body


# ---------------------------------------------------------------------------------------
# ASGI


@pytest.mark.parametrize(
    "header, client",
    [
        (v1("TCP4", "192.0.2.7", "198.51.100.9", 4711, 80), ("192.0.2.7", 4711)),
        (v1("TCP6", "2001:db8::7", "2001:db8::9", 4712, 80), ("2001:db8::7", 4712)),
        (v2(src="192.0.2.8", sport=4713, tlvs=tlv(PP2_TYPE_ALPN, b"http/1.1") + ssl_tlv()), ("192.0.2.8", 4713)),
        (v2(src="2001:db8::8", dst="2001:db8::9", sport=4714, tlvs=tlv(PP2_TYPE_AUTHORITY, b"example.com")), ("2001:db8::8", 4714)),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6"],
)
def test_asgi_client_from_the_header(start_server, header, client):
    srv = start(start_server, "auto", app=ASGI)
    with Conn(srv) as c:
        c.send(header + get(close=False))
        first = json.loads(c.response().body)
        c.send(get(close=True))
        second = json.loads(c.response().body)
    assert asgi_view(first) == asgi_view(second) == (client, "http")


def test_asgi_local_and_unknown_keep_the_real_peer(start_server):
    srv = start(start_server, "auto", app=ASGI)
    for header in (v1("UNKNOWN"), v2(cmd=0, body=b"")):
        s = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        port = s.getsockname()[1]
        s.sendall(header + get())
        status, body = split_response(recv_all(s))
        s.close()
        assert status == 200
        assert asgi_view(json.loads(body)) == (("127.0.0.1", port), "http")


def test_asgi_malformed_header_and_forbidden_peer(start_server):
    srv = start(start_server, "auto", "--proxy-allow-from", "10.0.0.0/8", app=ASGI)
    assert_refused(exchange(srv, v1(src="192.0.2.7") + get()), 403)
    assert_refused(exchange(srv, v1(sport=99999) + get()), 400)
    assert tuple(json.loads(split_response(exchange(srv, get()))[1])["client"])[0] == "127.0.0.1"


# ---------------------------------------------------------------------------------------
# malformed headers: refused, the connection closed, the worker still serving


MALFORMED = {
    # v1
    "v1-bad-address": b"PROXY TCP4 192.0.2.999 198.51.100.9 4711 80\r\n",
    "v1-ipv6-in-tcp4": b"PROXY TCP4 2001:db8::1 198.51.100.9 4711 80\r\n",
    "v1-ipv4-in-tcp6": b"PROXY TCP6 192.0.2.7 2001:db8::9 4711 80\r\n",
    "v1-port-out-of-range": b"PROXY TCP4 192.0.2.7 198.51.100.9 65536 80\r\n",
    "v1-dest-port-out-of-range": b"PROXY TCP4 192.0.2.7 198.51.100.9 4711 99999\r\n",
    "v1-port-not-a-number": b"PROXY TCP4 192.0.2.7 198.51.100.9 port 80\r\n",
    "v1-negative-port": b"PROXY TCP4 192.0.2.7 198.51.100.9 -1 80\r\n",
    "v1-missing-field": b"PROXY TCP4 192.0.2.7 198.51.100.9 4711\r\n",
    "v1-extra-field": b"PROXY TCP4 192.0.2.7 198.51.100.9 4711 80 x\r\n",
    "v1-unknown-protocol": b"PROXY UDP4 192.0.2.7 198.51.100.9 4711 80\r\n",
    "v1-lf-only": b"PROXY TCP4 192.0.2.7 198.51.100.9 4711 80\n",
    "v1-too-long": b"PROXY TCP6 " + b"f" * 120 + b"\r\n",
    # v2
    "v2-bad-magic": b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + b"\xc0\x00\x02\x07" * 3,
    "v2-version-1": v2(version=1),
    "v2-version-3": v2(version=3),
    "v2-bad-command": v2(cmd=0x2),
    "v2-tcp4-block-too-short": v2(fam=0x11, body=b"\xc0\x00\x02\x07\x00\x50"),
    "v2-tcp6-block-too-short": v2(fam=0x21, body=b"\x20\x01\x0d\xb8" + b"\0" * 20),
    "v2-unknown-family": v2(fam=0x41, body=b"\0" * 12),
    "v2-unknown-transport": v2(fam=0x13, body=b"\0" * 12),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_header_is_refused_and_the_worker_keeps_serving(start_server, name):
    srv = start(start_server, "auto")
    pid = ask(srv, v1(src="192.0.2.1"))["pid"]
    raw = exchange(srv, MALFORMED[name] + get())
    assert_refused(raw, 400)
    # The next client is served by the same worker.
    env = ask(srv, v2(src="192.0.2.2"))
    assert env["REMOTE_ADDR"] == "192.0.2.2" and env["pid"] == pid


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 192.0.2.7",  # v1 without its CRLF
        V2_SIG + b"\x21\x11",  # v2 without its length
        v2()[:20],  # v2 with part of its address block
        v2(length=0xFFFF),  # v2 announcing more than it sends (64 KiB)
    ],
    ids=["v1-no-crlf", "v2-no-length", "v2-short-block", "v2-oversized-length"],
)
def test_truncated_header_then_eof_closes_without_a_response(start_server, data):
    srv = start(start_server, "auto")
    pid = ask(srv, v1(src="192.0.2.1"))["pid"]
    t0 = time.monotonic()
    assert exchange(srv, data, shut_write=True) == b""
    assert time.monotonic() - t0 < 3, "the server waited for more after the client's EOF"
    assert ask(srv, v1(src="192.0.2.2"))["pid"] == pid


def test_a_header_that_never_completes_is_dropped_after_the_header_timeout(start_server):
    srv = start(start_server, "auto")
    s = socket.create_connection((srv.host, srv.port), timeout=15)
    s.sendall(b"PROXY TCP4 192.0.2.7 ")
    t0 = time.monotonic()
    try:
        data = recv_all(s, 15)
    except ConnectionResetError:
        data = b""
    waited = time.monotonic() - t0
    s.close()
    assert data == b"" and 3 < waited < 12, (data, waited)
    assert ask(srv, v1(src="192.0.2.2"))["REMOTE_ADDR"] == "192.0.2.2"


def test_a_slow_proxy_header_sent_byte_by_byte_is_accepted(start_server):
    srv = start(start_server, "auto")
    data = v2(src="192.0.2.9", sport=9, tlvs=ssl_tlv())
    with socket.create_connection((srv.host, srv.port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in data:
            s.sendall(bytes([b]))
            time.sleep(0.002)
        s.sendall(get())
        status, body = split_response(recv_all(s))
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "192.0.2.9"


# ---------------------------------------------------------------------------------------
# --proxy-allow-from


def test_peer_outside_proxy_allow_from_gets_403(start_server):
    srv = start(start_server, "auto", "--proxy-allow-from", "10.0.0.0/8, 192.168.1.1")
    assert_refused(exchange(srv, v1(src="192.0.2.7") + get()), 403)
    assert_refused(exchange(srv, v2(src="192.0.2.7") + get()), 403)
    # The same peer without a header is served, with its own address.
    assert ask(srv, b"")["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_allow_from_cidr_and_star_allow_the_peer(start_server):
    srv = start(start_server, "auto", "--proxy-allow-from", "127.0.0.0/8")
    assert ask(srv, v1(src="192.0.2.7"))["REMOTE_ADDR"] == "192.0.2.7"
    srv2 = start(start_server, "auto", "--proxy-allow-from", "*")
    assert ask(srv2, v2(src="192.0.2.8"))["REMOTE_ADDR"] == "192.0.2.8"


# ---------------------------------------------------------------------------------------
# a UNIX-socket listener (a proxy on the same host)


def test_header_on_a_unix_socket_listener(start_server, tmp_path):
    """-b unix:PATH with --proxy-protocol: a local proxy's header gives the client address
    (UNIX-socket peers are always allowed, as in Gunicorn)."""
    path = str(tmp_path / "pp.sock")
    srv = start(start_server, "auto", "-b", f"unix:{path}", "--proxy-allow-from", "10.0.0.1")
    cases = [(v1(src="192.0.2.7", sport=4711), ("192.0.2.7", "4711")), (v2(src="2001:db8::7", sport=4712), ("2001:db8::7", "4712"))]
    for header, addr in cases:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            s.connect(path)
            s.sendall(header + get())
            raw = recv_all(s)
        status, body = split_response(raw)
        assert status == 200, raw[:300]
        assert wsgi_view(json.loads(body))[:2] == addr


# ---------------------------------------------------------------------------------------
# before TLS, and HTTP/2


def _h2_requests(sock, paths, authority="127.0.0.1"):
    """Sends GET `paths` as concurrent streams on an HTTP/2 connection; {path: (status, body)}."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    streams = {}
    for path in paths:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "https" if isinstance(sock, ssl.SSLSocket) else "http"),
                                (":path", path), (":authority", authority)], end_stream=True)
        streams[sid] = [path, None, b""]
    sock.sendall(conn.data_to_send())
    done = set()
    while len(done) < len(streams):
        data = sock.recv(65536)
        assert data, "connection closed before all responses"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                streams[ev.stream_id][1] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                streams[ev.stream_id][2] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                done.add(ev.stream_id)
        sock.sendall(conn.data_to_send())
    return [(status, body) for _, status, body in streams.values()]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for certificates")
def test_header_before_tls_http1_and_h2(start_server, certs):  # noqa: F811
    srv = start(start_server, "auto", *tls_args(certs), "--http-protocols", "h2,h1")
    # HTTP/1.1 over TLS after a v1 header.
    raw = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
    raw.sendall(v1(src="192.0.2.7", sport=4711))
    with client_ctx(certs, alpn=["http/1.1"]).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(get())
        status, body = split_response(recv_all(s))
    assert status == 200
    assert wsgi_view(json.loads(body)) == ("192.0.2.7", "4711", "https")
    # HTTP/2 over TLS after a v2 header: every stream sees the header's address.
    raw = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
    raw.sendall(v2(src="2001:db8::7", dst="2001:db8::1", sport=4712, tlvs=tlv(PP2_TYPE_ALPN, b"h2") + ssl_tlv()))
    with client_ctx(certs, alpn=["h2"]).wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "h2"
        results = _h2_requests(s, ["/", "/?a", "/?b"])
    assert [st for st, _ in results] == [200, 200, 200]
    for _, body in results:
        env = json.loads(body)
        assert wsgi_view(env) == ("2001:db8::7", "4712", "https") and env["SERVER_PROTOCOL"] == "HTTP/2.0"


def test_header_then_h2c_prior_knowledge(start_server):
    """--proxy-protocol with --http2-cleartext prior-knowledge: a PROXY header followed by
    the HTTP/2 preface (what HAProxy sends with `send-proxy-v2 proto h2`) is served as h2c."""
    srv = start(start_server, "auto", "--http2-cleartext", "prior-knowledge")
    with socket.create_connection((srv.host, srv.port), timeout=TIMEOUT) as s:
        s.sendall(v2(src="192.0.2.7", sport=4711))
        results = _h2_requests(s, ["/", "/?x"])
    assert [st for st, _ in results] == [200, 200]
    for _, body in results:
        env = json.loads(body)
        assert wsgi_view(env) == ("192.0.2.7", "4711", "http") and env["SERVER_PROTOCOL"] == "HTTP/2.0"


# ---------------------------------------------------------------------------------------
# a real HAProxy in front


def find_haproxy():
    for cand in (shutil.which("haproxy"), "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


HAPROXY_GLOBAL = """\
global
    maxconn 200
    nbthread 1

defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


class Endpoint:
    """Something Conn (tests/test_http11.py) can connect to, from a known source port."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.source_port = None

    def connect(self, timeout=TIMEOUT):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        self.source_port = s.getsockname()[1]
        s.connect((self.host, self.port))
        return s


@pytest.fixture
def haproxy(tmp_path):
    """haproxy(frontend_and_backend_config) -> Endpoint of the frontend (`{port}` in the
    config is replaced by a free port); stopped by PID at the end."""
    exe = find_haproxy()
    if exe is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    procs = []

    def start(body):
        port = free_port()
        cfg = tmp_path / f"haproxy-{len(procs)}.cfg"
        cfg.write_text(HAPROXY_GLOBAL + "\n" + body.replace("{port}", str(port)))
        check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(tmp_path / f"haproxy-{len(procs)}.log", "wb")
        proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"haproxy exited with {proc.returncode}: {(tmp_path / f'haproxy-{len(procs) - 1}.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return Endpoint(port)
            except OSError:
                time.sleep(0.05)
        pytest.fail("haproxy did not start")

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def http_frontend(server_line, options=""):
    return f"""\
frontend fe
    mode http
    bind 127.0.0.1:{{port}}
    {options}
    default_backend be

backend be
    mode http
    {options}
    {server_line}
"""


def tcp_frontend(server_line):
    return f"""\
frontend fe
    mode tcp
    bind 127.0.0.1:{{port}}
    default_backend be

backend be
    mode tcp
    {server_line}
"""


def through(ep, n=3):
    """`n` keep-alive requests through the proxy on one client connection: [env]."""
    out = []
    with Conn(ep) as c:
        for i in range(n):
            c.send(get(close=i == n - 1))
            r = c.response()
            assert r.status == 200, r
            out.append(json.loads(r.body))
    return out


@pytest.mark.parametrize(
    "send, options",
    [
        ("send-proxy", "option http-server-close"),
        ("send-proxy", "option http-keep-alive"),
        ("send-proxy-v2", "option http-server-close"),
        # HAProxy then adds PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID and PP2_TYPE_SSL TLVs.
        (
            "send-proxy-v2 proxy-v2-options ssl,crc32c,unique-id,authority",
            "option http-keep-alive\n    unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid",
        ),
    ],
    ids=["v1-server-close", "v1-keep-alive", "v2-server-close", "v2-tlvs-keep-alive"],
)
def test_haproxy_http_mode(start_server, haproxy, send, options):
    mode = "v2" if "v2" in send else "v1"
    srv = start(start_server, mode)
    ep = haproxy(http_frontend(f"server s1 127.0.0.1:{srv.port} {send}", options))
    envs = through(ep)
    for env in envs:
        assert wsgi_view(env) == ("127.0.0.1", str(ep.source_port), "http"), env
        assert env["PROXY_PROTOCOL"] == "TCP4"
    # A second client gets its own address.
    envs = through(ep, 1)
    assert envs[0]["REMOTE_PORT"] == str(ep.source_port)


@pytest.mark.parametrize(
    "send, mode", [("send-proxy", "v1"), ("send-proxy-v2", "v2"), ("send-proxy", "auto"), ("send-proxy-v2", "auto")]
)
def test_haproxy_tcp_mode(start_server, haproxy, send, mode):
    srv = start(start_server, mode)
    ep = haproxy(tcp_frontend(f"server s1 127.0.0.1:{srv.port} {send}"))
    envs = through(ep, 3)
    assert {wsgi_view(e) for e in envs} == {("127.0.0.1", str(ep.source_port), "http")}
    assert len({e["pid"] for e in envs}) == 1


def test_haproxy_tcp_mode_asgi(start_server, haproxy):
    srv = start(start_server, "auto", app=ASGI)
    ep = haproxy(tcp_frontend(f"server s1 127.0.0.1:{srv.port} send-proxy-v2"))
    envs = through(ep, 2)
    assert {asgi_view(e) for e in envs} == {(("127.0.0.1", ep.source_port), "http")}


def test_haproxy_http_mode_asgi(start_server, haproxy):
    srv = start(start_server, "v1", app=ASGI)
    ep = haproxy(http_frontend(f"server s1 127.0.0.1:{srv.port} send-proxy", "option http-keep-alive"))
    envs = through(ep, 2)
    assert {asgi_view(e) for e in envs} == {(("127.0.0.1", ep.source_port), "http")}


def test_haproxy_to_a_unix_socket(start_server, haproxy, tmp_path):
    sock_path = tmp_path / "fc.sock"
    srv = start(start_server, "v2", "-b", f"unix:{sock_path}")
    ep = haproxy(http_frontend(f"server s1 unix@{sock_path} send-proxy-v2", "option http-keep-alive"))
    envs = through(ep, 3)
    for env in envs:
        assert wsgi_view(env) == ("127.0.0.1", str(ep.source_port), "http"), env
        assert env["PROXY_PROTOCOL"] == "TCP4"


@pytest.mark.parametrize("send, protocol", [("send-proxy", "UNKNOWN"), ("send-proxy-v2", "LOCAL")])
def test_haproxy_unix_socket_frontend_keeps_the_real_peer(start_server, haproxy, tmp_path, send, protocol):
    """A client of a UNIX-socket frontend has no IP: HAProxy sends UNKNOWN (v1) or LOCAL
    (v2), and ferricorn keeps the proxy's own address."""
    front = tmp_path / "fe.sock"
    srv = start(start_server, "auto")
    haproxy(f"""\
frontend fe
    mode tcp
    bind 127.0.0.1:{{port}}
    bind unix@{front}
    default_backend be

backend be
    mode tcp
    server s1 127.0.0.1:{srv.port} {send}
""")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(front))
        s.sendall(get())
        raw = recv_all(s)
    status, body = split_response(raw)
    assert status == 200, raw[:300]
    env = json.loads(body)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["PROXY_PROTOCOL"] == protocol


def test_haproxy_h2_to_the_backend(start_server, haproxy):
    """HAProxy speaking HTTP/2 to ferricorn (`proto h2`) after a v2 header."""
    srv = start(start_server, "v2", "--http2-cleartext", "prior-knowledge")
    ep = haproxy(http_frontend(f"server s1 127.0.0.1:{srv.port} send-proxy-v2 proto h2", "option http-keep-alive"))
    envs = through(ep, 2)
    for env in envs:
        assert wsgi_view(env) == ("127.0.0.1", str(ep.source_port), "http"), env
        assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
