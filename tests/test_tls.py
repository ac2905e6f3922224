"""End-to-end tests of TLS (rustls: --certfile, --keyfile, --ca-certs, --cert-reqs) and
HTTP/2 over TLS (ALPN from --http-protocols), issue 8. Certificates are made once per
session with the `openssl` command; every test starts the real server."""

import asyncio
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from conftest import startup_error

TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


# --------------------------------------------------------------------------------------
# certificates


def _openssl(*args, cwd):
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{res.stderr}")
    return res


def _sign(d, name, key, ext, subject):
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d,
    )


SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

CLIENT_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = str(d / "ca.pem")
        self.keys = {}  # id -> (certfile, keyfile)
        self.client_cert = str(d / "client.pem")
        self.client_key = str(d / "client.key")
        self.ed25519 = False

    def pair(self, kind):
        return self.keys[kind]


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    # The CA.
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "30", "-subj", "/CN=ferricorn test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem", cwd=d,
    )
    c = Certs(d)
    subject = "/CN=localhost"
    # RSA: openssl 3 writes PKCS#8; -traditional gives PKCS#1.
    _openssl("genrsa", "-out", "rsa-pkcs8.key", "2048", cwd=d)
    _openssl("rsa", "-in", "rsa-pkcs8.key", "-traditional", "-out", "rsa-pkcs1.key", cwd=d)
    _openssl("pkey", "-in", "rsa-pkcs1.key", "-out", "rsa-pkcs8.key", cwd=d)
    _sign(d, "rsa", "rsa-pkcs8.key", SERVER_EXT, subject)
    assert "BEGIN RSA PRIVATE KEY" in (d / "rsa-pkcs1.key").read_text()
    assert "BEGIN PRIVATE KEY" in (d / "rsa-pkcs8.key").read_text()
    c.keys["rsa-pkcs1"] = (str(d / "rsa.pem"), str(d / "rsa-pkcs1.key"))
    c.keys["rsa-pkcs8"] = (str(d / "rsa.pem"), str(d / "rsa-pkcs8.key"))
    # The certificate and its key in one file (Gunicorn allows certfile alone).
    (d / "rsa-combined.pem").write_text((d / "rsa.pem").read_text() + (d / "rsa-pkcs8.key").read_text())
    c.keys["rsa-combined"] = (str(d / "rsa-combined.pem"), None)
    # ECDSA P-256: SEC1 from ecparam, PKCS#8 through pkey, SEC1 again through ec.
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec-sec1.key", cwd=d)
    _openssl("pkey", "-in", "ec-sec1.key", "-out", "ec-pkcs8.key", cwd=d)
    _openssl("ec", "-in", "ec-pkcs8.key", "-out", "ec-sec1.key", cwd=d)
    assert "BEGIN EC PRIVATE KEY" in (d / "ec-sec1.key").read_text()
    assert "BEGIN PRIVATE KEY" in (d / "ec-pkcs8.key").read_text()
    _sign(d, "ec", "ec-sec1.key", SERVER_EXT.replace(", keyEncipherment", ""), subject)
    c.keys["ec-sec1"] = (str(d / "ec.pem"), str(d / "ec-sec1.key"))
    c.keys["ec-pkcs8"] = (str(d / "ec.pem"), str(d / "ec-pkcs8.key"))
    # Ed25519 (PKCS#8 is its only PEM form), where this openssl has it.
    try:
        _openssl("genpkey", "-algorithm", "ED25519", "-out", "ed25519.key", cwd=d)
        _sign(d, "ed25519", "ed25519.key", SERVER_EXT.replace(", keyEncipherment", ""), subject)
        c.keys["ed25519-pkcs8"] = (str(d / "ed25519.pem"), str(d / "ed25519.key"))
        c.ed25519 = True
    except RuntimeError:
        pass
    # A client certificate signed by the same CA.
    _openssl("genrsa", "-out", "client.key", "2048", cwd=d)
    _sign(d, "client", "client.key", CLIENT_EXT, "/CN=test client")
    # Something that is not a key.
    (d / "notakey.pem").write_text("this is not a PEM private key\n")
    return c


KEY_KINDS = ["rsa-pkcs1", "rsa-pkcs8", "rsa-combined", "ec-sec1", "ec-pkcs8", "ed25519-pkcs8"]


def client_ctx(certs, *, client_cert=False, alpn=None, min_v=None, max_v=None):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if client_cert:
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if min_v:
        ctx.minimum_version = min_v
    if max_v:
        ctx.maximum_version = max_v
    return ctx


def tls_args(certs, kind="rsa-pkcs8"):
    cert, key = certs.pair(kind)
    return ["--certfile", cert] + (["--keyfile", key] if key else [])


def https(srv):
    return f"https://127.0.0.1:{srv.port}"


def start_tls(start_server, certs, *args, app="testapp:app", kind="rsa-pkcs8"):
    return start_server(app, "-w", "1", *tls_args(certs, kind), *args)


def error_lines(log):
    return [l for l in log.splitlines() if "[ERROR]" in l or "[CRITICAL]" in l or "Traceback" in l]


# --------------------------------------------------------------------------------------
# 1. HTTPS with each key type and format


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_https_with_key_type(start_server, certs, kind):
    if kind not in certs.keys:
        pytest.skip(f"this openssl cannot make {kind}")
    srv = start_tls(start_server, certs, kind=kind)
    with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/")
        assert (r.status_code, r.text, r.http_version) == (200, "Hello, World!\n", "HTTP/1.1")
        env = c.get(https(srv) + "/environ").json()
    assert env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert not error_lines(srv.log()), srv.log()


def test_listening_line_says_https(start_server, certs):
    """Gunicorn logs `Listening at: https://...` when TLS is on."""
    srv = start_tls(start_server, certs)
    assert f"Listening at: https://127.0.0.1:{srv.port}" in srv.log(), srv.log()


@pytest.mark.parametrize(
    "version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")], ids=["tls1.2", "tls1.3"]
)
def test_tls_versions_negotiate(start_server, certs, version, name):
    srv = start_tls(start_server, certs)
    ctx = client_ctx(certs, min_v=version, max_v=version)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == name
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert data.endswith(b"Hello, World!\n")


def test_plain_http_to_tls_port_is_refused_and_tls_keeps_working(start_server, certs):
    srv = start_tls(start_server, certs, "--log-level", "debug")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        s.settimeout(TIMEOUT)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert b" 200 " not in data and b"Hello" not in data, data
    with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
        for _ in range(3):
            assert c.get(https(srv) + "/").status_code == 200
    log = srv.log()
    assert not error_lines(log), log
    # The failed handshake is logged, at debug level only.
    handshake = [l for l in log.splitlines() if "handshake failed" in l.lower()]
    assert handshake and all("[DEBUG]" in l for l in handshake), log


# --------------------------------------------------------------------------------------
# 2. start-up errors


def _startup_error(run_cli, tmp_path, *args, setting):
    return startup_error(run_cli, *args, setting=setting)[1]


def test_startup_missing_certfile(run_cli, tmp_path, certs):
    out = _startup_error(
        run_cli, tmp_path, "--certfile", str(tmp_path / "nope.pem"), "--keyfile", certs.pair("rsa-pkcs8")[1],
        setting="certfile",
    )
    assert "nope.pem" in out


def test_startup_keyfile_not_a_key(run_cli, tmp_path, certs):
    _startup_error(run_cli, tmp_path, "--certfile", certs.pair("rsa-pkcs8")[0], "--keyfile", str(certs.dir / "notakey.pem"), setting="keyfile")


def test_startup_keyfile_is_a_certificate(run_cli, tmp_path, certs):
    cert = certs.pair("rsa-pkcs8")[0]
    _startup_error(run_cli, tmp_path, "--certfile", cert, "--keyfile", cert, setting="keyfile")


def test_startup_key_does_not_match_certificate(run_cli, tmp_path, certs):
    """A valid key for another certificate: still one line that names the setting."""
    _startup_error(
        run_cli, tmp_path, "--certfile", certs.pair("rsa-pkcs8")[0], "--keyfile", certs.pair("ec-sec1")[1], setting="keyfile"
    )


def test_startup_cert_reqs_2_without_ca_certs(run_cli, tmp_path, certs):
    _startup_error(run_cli, tmp_path, *tls_args(certs), "--cert-reqs", "2", setting="ca_certs")


def test_startup_http_protocols_h3(run_cli, tmp_path, certs):
    out = _startup_error(run_cli, tmp_path, *tls_args(certs), "--http-protocols", "h3", setting="http_protocols")
    assert "h3" in out


def test_startup_ssl_context_hook(run_cli, tmp_path, certs):
    conf = tmp_path / "tls_conf.py"
    conf.write_text(
        "import ssl\n\n"
        "def ssl_context(conf, default_ssl_context_factory):\n"
        "    return default_ssl_context_factory()\n"
    )
    _startup_error(run_cli, tmp_path, "-c", str(conf), *tls_args(certs), setting="ssl_context")


# --------------------------------------------------------------------------------------
# 3. client certificates


def test_client_cert_required(start_server, certs):
    srv = start_tls(start_server, certs, "--cert-reqs", "2", "--ca-certs", certs.ca)
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
            c.get(https(srv) + "/")
    with httpx.Client(verify=client_ctx(certs, client_cert=True), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/environ")
        assert r.status_code == 200
        assert r.json()["wsgi.url_scheme"] == "https"
    assert not error_lines(srv.log()), srv.log()


def test_client_cert_optional(start_server, certs):
    srv = start_tls(start_server, certs, "--cert-reqs", "1", "--ca-certs", certs.ca)
    with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
        assert c.get(https(srv) + "/").status_code == 200
    with httpx.Client(verify=client_ctx(certs, client_cert=True), timeout=TIMEOUT) as c:
        assert c.get(https(srv) + "/").status_code == 200


# --------------------------------------------------------------------------------------
# 4. HTTP/2


@pytest.fixture
def h2_server(start_server, certs):
    return start_tls(start_server, certs, "--http-protocols", "h2,h1", "--threads", "10")


def test_h2_negotiated_and_environ(h2_server, certs):
    srv = h2_server
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/environ?x=1")
    assert r.status_code == 200
    assert r.http_version == "HTTP/2"
    env = r.json()
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1"


def test_h2_alpn_selects_h2(h2_server, certs):
    ctx = client_ctx(certs, alpn=["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", h2_server.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == "h2"


def test_h2_post_1mb_echo(h2_server, certs):
    body = bytes(range(256)) * 4096  # 1 MiB
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.post(https(h2_server) + "/echo", content=body)
    assert r.http_version == "HTTP/2"
    assert r.status_code == 200
    assert len(r.content) == len(body)
    assert r.content == body


def test_h2_stream(h2_server, certs):
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        with c.stream("GET", https(h2_server) + "/stream?200") as r:
            assert r.http_version == "HTTP/2"
            data = b"".join(r.iter_bytes())
    assert data == b"".join(f"chunk {i}\n".encode() for i in range(200))


def test_h2_concurrent_streams_on_one_connection(h2_server, certs):
    base = https(h2_server)

    async def main():
        async with httpx.AsyncClient(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
            # Open the connection first so every request below multiplexes on it.
            assert (await c.get(base + "/")).http_version == "HTTP/2"
            t0 = time.monotonic()
            reqs = [c.get(base + "/environ") for _ in range(10)] + [c.get(base + "/sleep?0.5") for _ in range(10)]
            rs = await asyncio.gather(*reqs)
            return rs, time.monotonic() - t0

    rs, elapsed = asyncio.run(main())
    assert [r.status_code for r in rs] == [200] * 20
    assert {r.http_version for r in rs} == {"HTTP/2"}
    ports = {r.json()["REMOTE_PORT"] for r in rs[:10]}
    assert len(ports) == 1, ports  # one connection
    assert all(r.json()["slept"] for r in rs[10:])
    # Ten 0.5 s calls with --threads 10 run side by side, not one after another (5 s).
    assert elapsed < 3.0, elapsed


def _curl_has_http2():
    if not shutil.which("curl"):
        return False
    return "HTTP2" in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2")
def test_h2_curl(h2_server, certs):
    res = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", certs.ca, "-w", "\n%{http_version}", https(h2_server) + "/environ"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr
    body, version = res.stdout.rsplit("\n", 1)
    assert version == "2"
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert env["wsgi.url_scheme"] == "https"


def test_h1_only_by_default(start_server, certs):
    srv = start_tls(start_server, certs)
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/environ")
    assert r.http_version == "HTTP/1.1"
    assert r.json()["SERVER_PROTOCOL"] == "HTTP/1.1"
    ctx = client_ctx(certs, alpn=["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() in (None, "http/1.1")


def test_asgi_over_h2(start_server, certs):
    srv = start_tls(start_server, certs, "--http-protocols", "h2,h1", app="tls_asgi:app")
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.post(https(srv) + "/scope", content=b"x" * 100_000)
        assert r.status_code == 200, srv.log()
        assert r.http_version == "HTTP/2"
        scope = r.json()
        r1 = httpx.get(https(srv) + "/scope", verify=client_ctx(certs), timeout=TIMEOUT)
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "https"
    assert scope["path"] == "/scope"
    assert scope["headers"].get("host") == f"127.0.0.1:{srv.port}"
    assert scope["body_len"] == 100_000
    assert r1.http_version == "HTTP/1.1"
    assert (r1.json()["http_version"], r1.json()["scheme"]) == ("1.1", "https")


# --------------------------------------------------------------------------------------
# 5. a client that never sends a ClientHello


def test_silent_client_does_not_block_others(start_server, certs):
    srv = start_tls(start_server, certs, "--http-protocols", "h2,h1")
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) for _ in range(3)]
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        for http2 in (False, True):
            with httpx.Client(http2=http2, verify=client_ctx(certs), timeout=5.0) as c:
                assert c.get(https(srv) + "/").status_code == 200
        assert time.monotonic() - t0 < 3.0
    finally:
        for s in idle:
            s.close()
    # A half-open handshake followed by a close, and garbage instead of a ClientHello.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(b"\x00" * 64)
    time.sleep(0.3)
    with httpx.Client(verify=client_ctx(certs), timeout=5.0) as c:
        assert c.get(https(srv) + "/").status_code == 200
    assert srv.proc.poll() is None
    assert not error_lines(srv.log()), srv.log()


# --------------------------------------------------------------------------------------
# 6. access log


def test_access_log_protocol_over_tls_and_h2(start_server, certs):
    srv = start_tls(
        start_server, certs, "--http-protocols", "h2,h1", "--access-logfile", "-",
        "--access-logformat", "ACCESS %(H)s|%(r)s|%(s)s|%(U)s",
    )
    with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
        assert c.get(https(srv) + "/via-h1?a=1").status_code == 200
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/via-h2?b=2")
        assert (r.status_code, r.http_version) == (200, "HTTP/2")
    srv.wait_for("/via-h2", timeout=5)
    lines = [l[l.index("ACCESS ") :].split("|") for l in srv.log().splitlines() if "ACCESS " in l]
    assert ["ACCESS HTTP/1.1", "GET /via-h1?a=1 HTTP/1.1", "200", "/via-h1"] in lines, lines
    assert ["ACCESS HTTP/2.0", "200", "/via-h2"] in [[l[0], l[2], l[3]] for l in lines], lines
    assert not error_lines(srv.log()), srv.log()


def test_h2_request_target_is_the_path(start_server, certs):
    """Over HTTP/2 the request target is :path: RAW_URI, REQUEST_URI and the access log's
    %(r)s carry `/path?query` as over HTTP/1.1 and as Gunicorn's HTTP/2 sets them, not an
    absolute URL rebuilt from :scheme and :authority."""
    srv = start_tls(
        start_server, certs, "--http-protocols", "h2,h1", "--access-logfile", "-", "--access-logformat", "ACCESS %(r)s",
    )
    with httpx.Client(http2=True, verify=client_ctx(certs), timeout=TIMEOUT) as c:
        r = c.get(https(srv) + "/environ?x=1")
    assert r.http_version == "HTTP/2"
    env = r.json()
    srv.wait_for("ACCESS GET", timeout=5)
    assert (env["RAW_URI"], env["REQUEST_URI"]) == ("/environ?x=1", "/environ?x=1")
    assert "ACCESS GET /environ?x=1 HTTP/2.0" in srv.log(), srv.log()


# --------------------------------------------------------------------------------------
# --ciphers and certificate reload


def _handshake(srv, certs, **kw):
    ctx = client_ctx(certs, **kw)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.version(), s.cipher()[0], s.getpeercert()


def test_ciphers_restrict_tls12_suites_and_keep_tls13(start_server, certs):
    srv = start_tls(start_server, certs, "--ciphers", "ECDHE-RSA-CHACHA20-POLY1305")
    version, cipher, _ = _handshake(srv, certs, max_v=ssl.TLSVersion.TLSv1_2)
    assert (version, cipher) == ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305")
    # TLS 1.3 suites are not governed by --ciphers (as with Python's set_ciphers).
    assert _handshake(srv, certs)[0] == "TLSv1.3"
    # A TLS 1.2 client offering only other suites cannot connect.
    ctx = client_ctx(certs, max_v=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("spec", ["HIGH:!aNULL:!MD5", "ECDHE+AESGCM", "RC4-SHA", "DEFAULT"])
def test_openssl_cipher_lists_start_with_a_warning(start_server, certs, spec):
    """Gunicorn starts with any OpenSSL cipher list; rustls cannot apply keywords and
    expressions, nor suites it lacks: they are named in a warning, and rustls' own
    suites (AEAD with forward secrecy) serve."""
    srv = start_tls(start_server, certs, "--ciphers", spec)
    assert "ciphers: " in srv.log() and "not applied" in srv.log(), srv.log()
    version, _, _ = _handshake(srv, certs, max_v=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"


def test_a_cipher_list_keeps_the_suites_rustls_has(start_server, certs):
    srv = start_tls(start_server, certs, "--ciphers", "HIGH:ECDHE-RSA-CHACHA20-POLY1305:!aNULL")
    assert "HIGH, !aNULL not applied" in srv.log(), srv.log()
    version, cipher, _ = _handshake(srv, certs, max_v=ssl.TLSVersion.TLSv1_2)
    assert (version, cipher) == ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305")


def test_hup_reloads_the_certificate(start_server, certs, tmp_path):
    d = certs.dir
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(d / "rsa.pem", cert)
    shutil.copy(d / "rsa-pkcs8.key", key)
    srv = start_server("testapp:app", "-w", "1", "--certfile", str(cert), "--keyfile", str(key))
    first = _handshake(srv, certs)[2]["serialNumber"]
    # Renewed in place, as certbot does: a new certificate with a new serial.
    _sign(d, "renewed", "rsa-pkcs8.key", SERVER_EXT, "/CN=localhost")
    shutil.copy(d / "renewed.pem", cert)
    srv.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if _handshake(srv, certs)[2]["serialNumber"] != first:
                break
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    else:
        raise AssertionError("the renewed certificate was not served after HUP")
    # A broken certificate on the next HUP keeps the previous one.
    cert.write_text("not a certificate\n")
    srv.send_signal(signal.SIGHUP)
    srv.wait_for("TLS reload failed, keeping the previous certificate")
    time.sleep(1)
    assert _handshake(srv, certs)[2]["serialNumber"] != first


def test_client_certificate_reaches_wsgi_and_asgi(start_server, certs):
    """WSGI gets the leaf as PEM in SSL_CLIENT_CERT (mod_ssl's name); ASGI gets the
    TLS extension with the chain."""
    expected = open(certs.client_cert).read().strip()
    srv = start_tls(start_server, certs, "--cert-reqs", "1", "--ca-certs", certs.ca)
    with httpx.Client(verify=client_ctx(certs, client_cert=True), timeout=TIMEOUT) as c:
        env = c.get(https(srv) + "/environ").json()
    assert env["SSL_CLIENT_CERT"].strip() == expected
    with httpx.Client(verify=client_ctx(certs), timeout=TIMEOUT) as c:
        assert "SSL_CLIENT_CERT" not in c.get(https(srv) + "/environ").json()
    asrv = start_tls(start_server, certs, "--cert-reqs", "1", "--ca-certs", certs.ca, app="asgi_raw:app")
    with httpx.Client(verify=client_ctx(certs, client_cert=True), timeout=TIMEOUT) as c:
        scope = c.get(https(asrv) + "/scope").json()
    tls = scope["extensions"]["tls"]
    assert tls["client_cert_chain"][0].strip() == expected
    assert tls["tls_version"] in (0x0303, 0x0304) and tls["cipher_suite"] > 0
