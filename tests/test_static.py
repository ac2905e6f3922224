"""End-to-end tests of static file serving from Rust (`--static-map` and its companions):
headers, conditional requests, ranges, pre-compressed variants, path safety, the flags, the
access log, WSGI and ASGI apps, HTTP/2, the config file and a Django `collectstatic` tree.

Most tests share a few servers started once per module over one file tree (see `tree`);
raw sockets are used wherever the exact bytes on the wire or an unnormalised path matter."""

import email.utils
import gzip
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from conftest import TcpServer, base_env, free_port, startup_error, wait_workers

TIMEOUT = 10.0
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

HELLO = b"Hello, World!\n"  # what tests/apps/testapp.py answers for any unknown path

# A fixed modification time for every file of the tree, so Last-Modified is known.
MTIME = 1_600_000_000  # Sun, 13 Sep 2020 12:26:40 GMT
MTIME_HTTP = email.utils.formatdate(MTIME, usegmt=True)


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


SECRET = b"TOP-SECRET-next-to-the-static-dir-7f3c\n"
OUTSIDE = b"outside-directory-file-4b1d\n"
CSS = b"body { color: #123456; }\n/* static-css-marker */\n"
JS = b"".join(b"console.log('static-js-marker %d');\n" % i for i in range(40))
JS_BR = b"FAKE-BROTLI-BODY-of-app.js\x00\x01\x02"
JS_ZST = b"FAKE-ZSTD-BODY-of-app.js\x03\x04"
JS_GZ = gzip.compress(JS, mtime=0)
ONLYGZ = b"".join(b"var onlyGz%d = %d;\n" % (i, i) for i in range(50))
ALPHA = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # 62 bytes
HTML = b"<!doctype html><title>static-html-page</title>\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
JSON = b'{"static": true}\n'
BLOB = bytes(range(256)) * 3
HIDDEN = b"dotfile-content-91ac\n"
HELLO_SPACE = b"a file with a space in its name\n"
CAFE = b"/* caf\xc3\xa9 */\n"
HASHED = b".hashed { color: red; }\n"
ASSET = b".asset { color: blue; }\n"
ROOT_INDEX = b"<!doctype html><title>root-index</title>\n"
SUB_INDEX = b"<!doctype html><title>sub-index</title>\n"
DEEP = b"deep-file-content\n"
BIG_SIZE = 20 * 1024 * 1024

CT_CSS = "text/css; charset=utf-8"
CT_JS = "text/javascript; charset=utf-8"
CT_HTML = "text/html; charset=utf-8"


class Tree(NamedTuple):
    base: Path  # holds secret.txt and outside/, next to the static directories
    root: Path  # mapped at /static
    assets: Path  # mapped at /assets (server A) or /other (server B)
    big_sha: str


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("static-tree")
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "file.txt").write_bytes(OUTSIDE)

    root = base / "root"
    root.mkdir()
    files = {
        "app.css": CSS,
        "app.js": JS,
        "app.js.br": JS_BR,
        "app.js.zst": JS_ZST,
        "app.js.gz": JS_GZ,
        "onlygz.js": ONLYGZ,
        "onlygz.js.gz": gzip.compress(ONLYGZ, mtime=0),
        "range.css": ALPHA,
        "page.html": HTML,
        "image.png": PNG,
        "data.json": JSON,
        "blob.qqqzzz": BLOB,
        "hello world.txt": HELLO_SPACE,
        "café.css": CAFE,
        "a": b"truncation-target-file\n",
        "app.3f2a9b1c4d5e.css": HASHED,
        "jquery.min.3f2a9b1c4d5e.js": HASHED,
        "app.0123456789abcdef0123.css": HASHED,
        "app.3F2A9B1C4D5E.css": HASHED,
        "app.3f2a9b1c4d5.css": HASHED,
        "app.3f2a9b1c4d5g.css": HASHED,
        ".hidden": HIDDEN,
        ".hiddendir/file.txt": HIDDEN,
        "index.html": ROOT_INDEX,
        "sub/index.html": SUB_INDEX,
        "sub/deep.txt": DEEP,
        "noindex/file.txt": DEEP,
    }
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    # 20 MiB of distinct 1 KiB blocks, so a lost, repeated or misplaced block changes the digest.
    big = b"".join(hashlib.sha256(b"%d" % i).digest() * 32 for i in range(BIG_SIZE // 1024))
    assert len(big) == BIG_SIZE
    (root / "big.bin").write_bytes(big)

    os.symlink("app.css", root / "link-in.txt")  # stays inside: always served
    os.symlink("sub", root / "link-subdir")  # a directory inside: always served
    os.symlink("../secret.txt", root / "link-out.txt")  # leads outside
    os.symlink("../outside", root / "link-outdir")  # a directory outside

    assets = base / "assets"
    assets.mkdir()
    (assets / "a.css").write_bytes(ASSET)
    (assets / "a.3f2a9b1c4d5e.css").write_bytes(ASSET)

    for d, dirs, names in os.walk(base):
        for n in names:
            os.utime(os.path.join(d, n), (MTIME, MTIME))
    return Tree(base, root, assets, hashlib.sha256(big).hexdigest())


@pytest.fixture(scope="module")
def spawn(tmp_path_factory):
    """Module-scoped variant of conftest's start_server: the servers live for the module."""
    logdir = tmp_path_factory.mktemp("static-logs")
    servers = []

    def start(*args, cwd=None, env=None):
        port = free_port()
        srv = TcpServer(["-b", f"127.0.0.1:{port}", *args], cwd or logdir, base_env(env), logdir / f"server-{len(servers)}.log", port)
        servers.append(srv)
        return srv.wait_ready()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def srv_a(spawn, tree):
    """Default options: no flags, /static at the default max-age, /assets at 3600."""
    return spawn(
        "testapp:app", "-w", "1", "--access-logfile", "-",
        "--static-map", f"/static={tree.root}",
        "--static-map", f"/assets={tree.assets}",
        "--static-max-age", "/assets=3600",
    )


@pytest.fixture(scope="module")
def srv_b(spawn, tree):
    """Every flag on; the per-prefix max-age is given before the bare one on purpose."""
    return spawn(
        "testapp:app", "-w", "1",
        "--static-max-age", "/other=10",
        "--static-map", f"/static={tree.root}",
        "--static-map", f"/other={tree.assets}",
        "--static-max-age", "300",
        "--static-immutable", "--static-fallthrough", "--static-follow-symlinks",
        "--static-dotfiles", "--static-index", "index.html",
    )


@pytest.fixture(scope="module")
def srv_asgi(spawn, tree):
    return spawn(
        "asgi_raw:app", "-w", "1",
        "--static-map", f"/static={tree.root}",
        "--static-map", f"/scope={tree.assets}",
        "--static-fallthrough",
    )


# ---------------------------------------------------------------------------------------
# A tiny HTTP/1.1 client that reports exactly what the server wrote.


class Resp(NamedTuple):
    status: int
    headers: dict  # lower-case name -> value; repeated fields joined with ", "
    header_list: list
    body: bytes


def _parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0].startswith("HTTP/1."), lines[0]
    headers, header_list = {}, []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        header_list.append((name, value))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(parts[1]), headers, header_list


def _dechunk(data):
    out = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


def request(srv, target, method="GET", headers=(), body=b""):
    """One request on its own connection (Connection: close); the target is sent verbatim."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    data = srv.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, timeout=TIMEOUT)
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response to {method} {target!r}: {data[:300]!r}"
    status, hdrs, hlist = _parse_head(head)
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    return Resp(status, hdrs, hlist, rest)


def get(srv, target, **headers):
    return request(srv, target, headers=[(k.replace("_", "-"), v) for k, v in headers.items()])


def check_full(r, data, ctype=None):
    """A 200 carrying the whole of `data`, framed by Content-Length."""
    assert r.status == 200, r
    assert r.body == data
    assert int(r.headers["content-length"]) == len(data)
    assert "transfer-encoding" not in r.headers
    if ctype is not None:
        assert r.headers["content-type"] == ctype


class Conn:
    """A keep-alive connection that reads responses one by one, by their framing."""

    def __init__(self, srv):
        self.sock = srv.connect(TIMEOUT)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError(f"connection closed; buffer {self.buf[:200]!r}")
        self.buf += b

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, target, method="GET", headers=()):
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def response(self, method="GET"):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, headers, hlist = _parse_head(head)
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self._take(2)
                    break
                body += self._take(size)
                self._take(2)
        else:
            body = self._take(int(headers["content-length"]))
        return Resp(status, headers, hlist, body)


def parse_byteranges(body, boundary):
    """Strict multipart/byteranges (RFC 9110 14.6 / RFC 2046): [(headers, data)]."""
    delim = b"--" + boundary.encode("latin-1")
    assert delim in body, body[:200]
    rest = body[body.index(delim) :]  # a preamble (e.g. a leading CRLF) is allowed
    parts = []
    while True:
        assert rest.startswith(delim), rest[:100]
        rest = rest[len(delim) :]
        if rest.startswith(b"--"):
            return parts  # the close delimiter; an epilogue may follow
        assert rest.startswith(b"\r\n"), rest[:100]
        head, sep, rest = rest[2:].partition(b"\r\n\r\n")
        assert sep, rest[:100]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers["content-range"])
        assert m, headers
        n = int(m.group(2)) - int(m.group(1)) + 1
        data, rest = rest[:n], rest[n:]
        assert rest.startswith(b"\r\n"), f"part data not followed by CRLF: {rest[:60]!r}"
        rest = rest[2:]
        parts.append((headers, data))


def boundary_of(ctype):
    m = re.fullmatch(r'multipart/byteranges;\s*boundary=("?)([^";]+)\1', ctype.strip())
    assert m, ctype
    return m.group(2)


def curl(*args):
    r = subprocess.run([CURL, "-sS", "--max-time", str(TIMEOUT), *args], capture_output=True, timeout=TIMEOUT + 5)
    assert r.returncode == 0, f"curl {args} failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    return r.stdout


def curl_head_block(raw):
    """Headers of the response in `curl -D` output: (status, {name: value})."""
    head = raw.split(b"\r\n\r\n")[0]
    status, headers, _ = _parse_head(head)
    return status, headers


ETAG_RE = re.compile(r'"[^"\s]+"')


# ---------------------------------------------------------------------------------------
# 1. headers of a 200, HEAD, content types, cache control


def test_get_headers(srv_a):
    r = get(srv_a, "/static/app.css")
    check_full(r, CSS, CT_CSS)
    assert r.headers["last-modified"] == MTIME_HTTP
    etag = r.headers["etag"]
    assert ETAG_RE.fullmatch(etag) and not etag.startswith("W/"), etag
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["vary"].lower() == "accept-encoding"
    assert "content-encoding" not in r.headers
    # The ETag is stable and tells files apart.
    assert get(srv_a, "/static/app.css").headers["etag"] == etag
    assert get(srv_a, "/static/range.css").headers["etag"] != etag


def test_head_same_headers_no_body(srv_a):
    g = get(srv_a, "/static/app.css")
    h = request(srv_a, "/static/app.css", "HEAD")
    assert h.status == 200
    assert h.body == b""  # read until the server closed: nothing after the head
    for name in ("content-type", "content-length", "last-modified", "etag", "accept-ranges", "cache-control", "vary"):
        assert h.headers.get(name) == g.headers[name], name
    assert int(h.headers["content-length"]) == len(CSS)


@pytest.mark.parametrize(
    "name,ctype,data",
    [
        ("app.css", CT_CSS, CSS),
        ("app.js", CT_JS, JS),
        ("page.html", CT_HTML, HTML),
        ("image.png", "image/png", PNG),
        ("data.json", "application/json", JSON),
        ("blob.qqqzzz", "application/octet-stream", BLOB),
    ],
)
def test_content_type(srv_a, name, ctype, data):
    check_full(get(srv_a, f"/static/{name}"), data, ctype)


def test_query_string_is_ignored(srv_a):
    check_full(get(srv_a, "/static/app.css?v=123&x=%2e%2e"), CSS, CT_CSS)


def test_percent_encoded_names(srv_a):
    check_full(get(srv_a, "/static/hello%20world.txt"), HELLO_SPACE)
    check_full(get(srv_a, "/static/caf%C3%A9.css"), CAFE, CT_CSS)
    # Percent-encoded ordinary characters are the same file.
    check_full(get(srv_a, "/static/%61pp.css"), CSS, CT_CSS)


def test_prefix_boundaries_go_to_the_app(srv_a):
    for target in ("/", "/staticfoo", "/static.css", "/staticapp.css", "/assetsx/a.css", "/app.css"):
        r = get(srv_a, target)
        assert (r.status, r.body) == (200, HELLO), target
    # The app still gets its own routes.
    r = get(srv_a, "/environ")
    assert r.status == 200 and json.loads(r.body)["PATH_INFO"] == "/environ"


def test_missing_file_is_404_not_the_app(srv_a):
    for target in ("/static/missing.css", "/static/sub/missing.txt", "/assets/nope.css"):
        r = get(srv_a, target)
        assert r.status == 404, target
        assert HELLO not in r.body
    r = request(srv_a, "/static/missing.css", "HEAD")
    assert r.status == 404


def test_max_age_default_and_per_prefix(srv_a):
    assert get(srv_a, "/static/app.css").headers["cache-control"] == "public, max-age=60"
    r = get(srv_a, "/assets/a.css")
    check_full(r, ASSET, CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=3600"


def test_max_age_bare_value_and_per_prefix_wins(srv_b):
    assert get(srv_b, "/static/app.css").headers["cache-control"] == "public, max-age=300"
    r = get(srv_b, "/other/a.css")
    check_full(r, ASSET, CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=10"


IMMUTABLE = "public, max-age=31536000, immutable"


def test_hashed_names_without_immutable_flag(srv_a):
    for name in ("app.3f2a9b1c4d5e.css", "jquery.min.3f2a9b1c4d5e.js"):
        r = get(srv_a, f"/static/{name}")
        assert r.status == 200
        assert r.headers["cache-control"] == "public, max-age=60", name


@pytest.mark.parametrize(
    "path,cache",
    [
        ("/static/app.3f2a9b1c4d5e.css", IMMUTABLE),
        ("/static/jquery.min.3f2a9b1c4d5e.js", IMMUTABLE),
        ("/static/app.0123456789abcdef0123.css", IMMUTABLE),
        ("/other/a.3f2a9b1c4d5e.css", IMMUTABLE),
        ("/static/app.css", "public, max-age=300"),
        ("/static/app.3F2A9B1C4D5E.css", "public, max-age=300"),  # not lowercase
        ("/static/app.3f2a9b1c4d5.css", "public, max-age=300"),  # 11 characters
        ("/static/app.3f2a9b1c4d5g.css", "public, max-age=300"),  # not hex
        ("/other/a.css", "public, max-age=10"),
    ],
)
def test_immutable_flag(srv_b, path, cache):
    r = get(srv_b, path)
    assert r.status == 200, r
    assert r.headers["cache-control"] == cache


# ---------------------------------------------------------------------------------------
# 2. methods


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_405(srv_a, method):
    r = request(srv_a, "/static/app.css", method, body=b"hello" if method in ("POST", "PUT", "PATCH") else b"")
    assert r.status == 405
    assert [m.strip() for m in r.headers["allow"].split(",")] == ["GET", "HEAD"]
    assert CSS not in r.body


def test_post_missing_file_is_404(srv_a):
    r = request(srv_a, "/static/missing.css", "POST", body=b"hello")
    assert r.status == 404
    assert HELLO not in r.body


def test_methods_with_fallthrough(srv_b):
    # An existing file is still static: 405.
    r = request(srv_b, "/static/app.css", "POST", body=b"hello")
    assert r.status == 405
    assert [m.strip() for m in r.headers["allow"].split(",")] == ["GET", "HEAD"]
    # A missing one goes to the app, whatever the method.
    r = request(srv_b, "/static/missing.css", "POST", body=b"hello")
    assert (r.status, r.body) == (200, HELLO)


# ---------------------------------------------------------------------------------------
# 3. conditional requests


def etag_of(srv, path="/static/app.css"):
    return get(srv, path).headers["etag"]


def test_if_none_match(srv_a):
    etag = etag_of(srv_a)
    r = get(srv_a, "/static/app.css", If_None_Match=etag)
    assert r.status == 304
    assert r.body == b""
    assert r.headers["etag"] == etag
    r = get(srv_a, "/static/app.css", If_None_Match="*")
    assert r.status == 304 and r.body == b""
    r = get(srv_a, "/static/app.css", If_None_Match=f'"not-it", {etag}')
    assert r.status == 304 and r.body == b""
    check_full(get(srv_a, "/static/app.css", If_None_Match='"not-it"'), CSS)


def test_if_modified_since(srv_a):
    for date in (MTIME_HTTP, http_date(MTIME + 3600)):
        r = get(srv_a, "/static/app.css", If_Modified_Since=date)
        assert r.status == 304, date
        assert r.body == b""
    check_full(get(srv_a, "/static/app.css", If_Modified_Since=http_date(MTIME - 3600)), CSS)
    # If-None-Match takes precedence: a non-matching tag means 200 whatever the date.
    r = get(srv_a, "/static/app.css", If_None_Match='"not-it"', If_Modified_Since=http_date(MTIME + 3600))
    check_full(r, CSS)


def test_if_match(srv_a):
    etag = etag_of(srv_a)
    r = get(srv_a, "/static/app.css", If_Match='"not-it"')
    assert r.status == 412
    assert CSS not in r.body
    check_full(get(srv_a, "/static/app.css", If_Match=etag), CSS)
    check_full(get(srv_a, "/static/app.css", If_Match="*"), CSS)


def test_if_unmodified_since(srv_a):
    r = get(srv_a, "/static/app.css", If_Unmodified_Since=http_date(MTIME - 3600))
    assert r.status == 412
    assert CSS not in r.body
    check_full(get(srv_a, "/static/app.css", If_Unmodified_Since=MTIME_HTTP), CSS)
    check_full(get(srv_a, "/static/app.css", If_Unmodified_Since=http_date(MTIME + 3600)), CSS)


# ---------------------------------------------------------------------------------------
# 4. ranges


def content_range(r):
    return r.headers["content-range"]


@pytest.mark.parametrize(
    "spec,start,end",
    [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", 57, 61),
        ("bytes=5-", 5, 61),
        ("bytes=50-1000", 50, 61),  # clipped at the end
        ("bytes=61-61", 61, 61),
    ],
)
def test_single_range(srv_a, spec, start, end):
    full = get(srv_a, "/static/range.css")
    r = get(srv_a, "/static/range.css", Range=spec)
    assert r.status == 206, r
    assert content_range(r) == f"bytes {start}-{end}/{len(ALPHA)}"
    assert int(r.headers["content-length"]) == end - start + 1
    assert r.body == ALPHA[start : end + 1]
    assert r.headers["content-type"] == CT_CSS
    assert r.headers["etag"] == full.headers["etag"]


@pytest.mark.parametrize("spec", [f"bytes={len(ALPHA)}-", "bytes=100-200"])
def test_unsatisfiable_range(srv_a, spec):
    r = get(srv_a, "/static/range.css", Range=spec)
    assert r.status == 416
    assert content_range(r) == f"bytes */{len(ALPHA)}"
    assert ALPHA not in r.body


@pytest.mark.parametrize("spec", ["bytes=abc", "bytes=", "chars=0-5", "bytes 0-5", "0-5"])
def test_invalid_range_is_ignored(srv_a, spec):
    r = get(srv_a, "/static/range.css", Range=spec)
    check_full(r, ALPHA, CT_CSS)
    assert "content-range" not in r.headers


def test_range_ignored_for_head(srv_a):
    r = request(srv_a, "/static/range.css", "HEAD", headers=[("Range", "bytes=0-9")])
    assert r.status == 200
    assert int(r.headers["content-length"]) == len(ALPHA)
    assert r.body == b""


def test_multiple_ranges(srv_a):
    full = get(srv_a, "/static/range.css")
    r = get(srv_a, "/static/range.css", Range="bytes=0-1,4-5")
    assert r.status == 206
    assert "content-range" not in r.headers
    assert int(r.headers["content-length"]) == len(r.body)
    parts = parse_byteranges(r.body, boundary_of(r.headers["content-type"]))
    assert len(parts) == 2, parts
    for (headers, data), (a, b) in zip(parts, [(0, 1), (4, 5)]):
        assert headers["content-type"] == full.headers["content-type"]
        assert headers["content-range"] == f"bytes {a}-{b}/{len(ALPHA)}"
        assert data == ALPHA[a : b + 1]


def test_multiple_ranges_larger_parts(srv_a):
    """Parts with CR/LF-free but longer data, one clipped at the end."""
    r = get(srv_a, "/static/range.css", Range="bytes=10-19, 30-39, 55-100")
    assert r.status == 206
    assert int(r.headers["content-length"]) == len(r.body)
    parts = parse_byteranges(r.body, boundary_of(r.headers["content-type"]))
    assert [p[1] for p in parts] == [ALPHA[10:20], ALPHA[30:40], ALPHA[55:]]
    assert [p[0]["content-range"] for p in parts] == ["bytes 10-19/62", "bytes 30-39/62", "bytes 55-61/62"]


def test_if_range(srv_a):
    etag = etag_of(srv_a, "/static/range.css")
    r = get(srv_a, "/static/range.css", Range="bytes=0-9", If_Range=etag)
    assert r.status == 206
    assert r.body == ALPHA[:10]
    check_full(get(srv_a, "/static/range.css", Range="bytes=0-9", If_Range='"another-etag"'), ALPHA)
    check_full(get(srv_a, "/static/range.css", Range="bytes=0-9", If_Range=http_date(MTIME - 86400)), ALPHA)


def test_keepalive_mixed_responses(srv_a):
    """HEAD, 304, 206, the app, 200s and a 404 on one connection: each framed right."""
    etag = etag_of(srv_a)
    with Conn(srv_a) as c:
        c.send("/static/app.css", "HEAD")
        r = c.response("HEAD")
        assert r.status == 200 and int(r.headers["content-length"]) == len(CSS)
        c.send("/static/app.css", headers=[("If-None-Match", etag)])
        assert c.response().status == 304
        c.send("/static/range.css", headers=[("Range", "bytes=3-7")])
        r = c.response()
        assert (r.status, r.body) == (206, ALPHA[3:8])
        c.send("/")
        assert c.response().body == HELLO
        c.send("/static/app.css")
        r = c.response()
        assert (r.status, r.body) == (200, CSS)
        # Pipelined.
        c.send("/static/range.css", headers=[("Range", "bytes=0-1,4-5")])
        c.send("/static/app.css", "HEAD")
        c.send("/static/data.json")
        r1, r2, r3 = c.response(), c.response("HEAD"), c.response()
        assert r1.status == 206 and len(parse_byteranges(r1.body, boundary_of(r1.headers["content-type"]))) == 2
        assert r2.status == 200 and r2.body == b""
        assert (r3.status, r3.body) == (200, JSON)
        c.send("/static/missing.css")
        assert c.response().status == 404


# ---------------------------------------------------------------------------------------
# 5. pre-compressed variants


@pytest.mark.parametrize(
    "accept,encoding,body",
    [
        ("gzip, deflate, br, zstd", "br", JS_BR),
        ("br", "br", JS_BR),
        ("zstd, gzip", "zstd", JS_ZST),
        ("gzip, zstd, br;q=0", "zstd", JS_ZST),
        ("gzip", "gzip", JS_GZ),
        ("deflate, gzip;q=0.5", "gzip", JS_GZ),
        ("br;q=0, zstd;q=0, gzip", "gzip", JS_GZ),
        ("gzip;q=0", None, JS),
        ("identity", None, JS),
        ("deflate", None, JS),
        (None, None, JS),
    ],
)
def test_precompressed_variant(srv_a, accept, encoding, body):
    plain = get(srv_a, "/static/app.js")
    headers = [("Accept-Encoding", accept)] if accept is not None else []
    r = request(srv_a, "/static/app.js", headers=headers)
    check_full(r, body, CT_JS)
    assert r.headers.get("content-encoding") == encoding
    assert r.headers["vary"].lower() == "accept-encoding"
    assert ETAG_RE.fullmatch(r.headers["etag"])
    if encoding:
        assert r.headers["etag"] != plain.headers["etag"]
    else:
        assert r.headers["etag"] == plain.headers["etag"]


def test_precompressed_etags_differ_and_revalidate(srv_a):
    tags = {}
    for enc in ("br", "zstd", "gzip"):
        r = get(srv_a, "/static/app.js", Accept_Encoding=enc)
        assert r.headers["content-encoding"] == enc
        tags[enc] = r.headers["etag"]
    tags["plain"] = get(srv_a, "/static/app.js").headers["etag"]
    assert len(set(tags.values())) == 4, tags
    r = get(srv_a, "/static/app.js", Accept_Encoding="br", If_None_Match=tags["br"])
    assert r.status == 304 and r.body == b""
    assert r.headers["etag"] == tags["br"]


def test_precompressed_head(srv_a):
    r = request(srv_a, "/static/app.js", "HEAD", headers=[("Accept-Encoding", "br, gzip")])
    assert r.status == 200 and r.body == b""
    assert r.headers["content-encoding"] == "br"
    assert int(r.headers["content-length"]) == len(JS_BR)


def test_variant_requested_directly(srv_a):
    r = get(srv_a, "/static/app.js.gz", Accept_Encoding="gzip")
    check_full(r, JS_GZ)
    assert "content-encoding" not in r.headers
    r = get(srv_a, "/static/app.js.br")
    check_full(r, JS_BR)
    assert "content-encoding" not in r.headers


def test_no_variant_no_encoding(srv_a):
    r = get(srv_a, "/static/app.css", Accept_Encoding="gzip, br, zstd")
    check_full(r, CSS, CT_CSS)
    assert "content-encoding" not in r.headers


@needs_curl
def test_curl_compressed(srv_a, tmp_path):
    out = curl("--compressed", "-D", str(tmp_path / "h"), srv_a.url + "/static/onlygz.js")
    assert out == ONLYGZ
    status, headers = curl_head_block((tmp_path / "h").read_bytes())
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == CT_JS


@needs_curl
def test_curl_range_and_head(srv_a, tmp_path):
    out = curl("-D", str(tmp_path / "h"), "-r", "0-9", srv_a.url + "/static/range.css")
    assert out == ALPHA[:10]
    status, headers = curl_head_block((tmp_path / "h").read_bytes())
    assert status == 206
    assert headers["content-range"] == "bytes 0-9/62"
    out = curl("-I", srv_a.url + "/static/page.html")
    status, headers = curl_head_block(out)
    assert status == 200
    assert headers["content-type"] == CT_HTML
    assert int(headers["content-length"]) == len(HTML)


def test_httpx_get(srv_a):
    with httpx.Client(base_url=srv_a.url, timeout=TIMEOUT, headers={"Accept-Encoding": "identity"}) as c:
        for _ in range(3):
            r = c.get("/static/data.json")
            assert r.status_code == 200
            assert r.json() == {"static": True}
        r = c.get("/static/range.css", headers={"Range": "bytes=-3"})
        assert r.status_code == 206 and r.content == ALPHA[-3:]
        r = c.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.content == JS  # httpx decodes the gzip variant back to the file


# ---------------------------------------------------------------------------------------
# 6. path safety


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..\\secret.txt",
    "/static/..%5csecret.txt",
    "/static/%2e%2e%5csecret.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/..%2f..%2fsecret.txt",
    "/static/./../secret.txt",
    "/static//../secret.txt",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/a%00.txt",
    "/static/a%00",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../outside/file.txt",
    "/static/%2e%2e/outside/file.txt",
]


def assert_no_leak(r):
    assert SECRET not in r.body
    assert OUTSIDE not in r.body
    assert b"root:x:0:0" not in r.body
    assert b"truncation-target-file" not in r.body


@pytest.mark.parametrize("target", TRAVERSALS + ["/static/.hidden", "/static/.hiddendir/file.txt", "/static/sub/../.hidden"])
def test_unsafe_paths_refused(srv_a, target):
    r = get(srv_a, target)
    assert r.status in (400, 404), (target, r.status, r.body[:200])
    assert_no_leak(r)
    assert HIDDEN not in r.body


@pytest.mark.parametrize("target", TRAVERSALS)
def test_unsafe_paths_with_permissive_flags(srv_b, target):
    """Following symlinks, dotfiles and fallthrough do not open traversal: refused, or at
    most the app's own answer."""
    r = get(srv_b, target)
    assert r.status in (400, 404) or (r.status, r.body) == (200, HELLO), (target, r.status, r.body[:200])
    assert_no_leak(r)


def test_symlinks_default(srv_a):
    check_full(get(srv_a, "/static/link-in.txt"), CSS)
    check_full(get(srv_a, "/static/link-subdir/deep.txt"), DEEP)
    for target in ("/static/link-out.txt", "/static/link-outdir/file.txt"):
        r = get(srv_a, target)
        assert r.status == 404, target
        assert_no_leak(r)


def test_symlinks_followed_with_flag(srv_b):
    check_full(get(srv_b, "/static/link-in.txt"), CSS)
    check_full(get(srv_b, "/static/link-out.txt"), SECRET)
    check_full(get(srv_b, "/static/link-outdir/file.txt"), OUTSIDE)


def test_dotfiles_served_with_flag(srv_b):
    check_full(get(srv_b, "/static/.hidden"), HIDDEN)
    check_full(get(srv_b, "/static/.hiddendir/file.txt"), HIDDEN)


# ---------------------------------------------------------------------------------------
# 7. directories, index, fallthrough


def test_directories_without_index(srv_a):
    for target in ("/static", "/static/", "/static/sub", "/static/sub/", "/static/noindex/"):
        r = get(srv_a, target)
        assert r.status == 404, target
        assert b"deep.txt" not in r.body and b"file.txt" not in r.body and b"index.html" not in r.body
        assert HELLO not in r.body
    check_full(get(srv_a, "/static/sub/index.html"), SUB_INDEX, CT_HTML)


def test_index(srv_b):
    check_full(get(srv_b, "/static/sub/"), SUB_INDEX, CT_HTML)
    check_full(get(srv_b, "/static/"), ROOT_INDEX, CT_HTML)
    for target, location in (("/static/sub", "/static/sub/"), ("/static", "/static/"), ("/static/link-subdir", "/static/link-subdir/")):
        r = get(srv_b, target)
        assert r.status == 301, target
        assert r.headers["location"] == location
    # Never a listing.
    r = get(srv_b, "/static/noindex/")
    assert b"file.txt" not in r.body
    assert r.status != 200 or r.body == HELLO


def test_fallthrough(srv_b):
    for target in ("/static/missing.css", "/static/sub/missing.txt", "/other/nope.css"):
        r = get(srv_b, target)
        assert (r.status, r.body) == (200, HELLO), target
    r = request(srv_b, "/static/missing.css", "HEAD")
    assert r.status == 200 and int(r.headers["content-length"]) == len(HELLO)
    # Existing files are still served statically.
    check_full(get(srv_b, "/static/app.css"), CSS, CT_CSS)


# ---------------------------------------------------------------------------------------
# 8. access log


def test_access_log(srv_a):
    get_r = request(srv_a, "/static/app.css?log=1", headers=[("User-Agent", "static-log-agent")])
    assert get_r.status == 200
    request(srv_a, "/static/nope.css?log=2", headers=[("User-Agent", "static-log-agent")])
    request(srv_a, "/static/range.css?log=3", headers=[("Range", "bytes=0-9"), ("User-Agent", "static-log-agent")])
    lines = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [l for l in srv_a.log().splitlines() if "?log=" in l]
        if len(lines) >= 3:
            break
        time.sleep(0.05)
    assert len(lines) == 3, srv_a.log()[-3000:]
    pre = r'^127\.0\.0\.1 - - \[[^\]]+\] '
    assert re.match(pre + rf'"GET /static/app\.css\?log=1 HTTP/1\.1" 200 {len(CSS)} "-" "static-log-agent"$', lines[0]), lines
    assert re.match(pre + r'"GET /static/nope\.css\?log=2 HTTP/1\.1" 404 \S+ "-" "static-log-agent"$', lines[1]), lines
    assert re.match(pre + r'"GET /static/range\.css\?log=3 HTTP/1\.1" 206 10 "-" "static-log-agent"$', lines[2]), lines


# ---------------------------------------------------------------------------------------
# 9. ASGI


def test_asgi_static(srv_asgi):
    r = get(srv_asgi, "/static/app.css")
    check_full(r, CSS, CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=60"
    etag = r.headers["etag"]
    assert get(srv_asgi, "/static/app.css", If_None_Match=etag).status == 304
    r = get(srv_asgi, "/static/range.css", Range="bytes=5-9")
    assert (r.status, r.body, content_range(r)) == (206, ALPHA[5:10], "bytes 5-9/62")
    r = get(srv_asgi, "/static/app.js", Accept_Encoding="br, gzip")
    assert r.headers["content-encoding"] == "br" and r.body == JS_BR
    r = request(srv_asgi, "/static/app.css", "HEAD")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) == len(CSS)
    r = request(srv_asgi, "/static/app.css", "POST", body=b"x")
    assert r.status == 405
    r = get(srv_asgi, "/static/../secret.txt")
    assert r.status in (400, 404)
    assert_no_leak(r)


def test_asgi_app_and_fallthrough(srv_asgi):
    r = get(srv_asgi, "/cl")
    assert (r.status, r.body, r.headers.get("x-app")) == (200, b"exactly-twenty-bytes", "raw")
    # /scope is a static prefix: its files are static, a missing one reaches the app.
    check_full(get(srv_asgi, "/scope/a.css"), ASSET, CT_CSS)
    r = get(srv_asgi, "/scope/missing.txt?q=1")
    assert r.status == 200
    scope = json.loads(r.body)
    assert scope["path"] == "/scope/missing.txt"
    assert scope["query_string"] == "q=1"


# ---------------------------------------------------------------------------------------
# 10. large files


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def test_large_file_streamed(start_server, tree):
    srv = start_server("testapp:app", "-w", "1", "--static-map", f"/static={tree.root}")
    (worker,) = wait_workers(srv, 1)
    check_full(get(srv, "/static/app.css"), CSS)  # warm the static path up
    hwm0, rss0 = vm(worker, "VmHWM"), vm(worker, "VmRSS")
    h = hashlib.sha256()
    n = 0
    mid = None
    with httpx.Client(timeout=30, headers={"Accept-Encoding": "identity"}) as c:
        with c.stream("GET", srv.url + "/static/big.bin") as r:
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == BIG_SIZE
            assert r.headers["content-type"] == "application/octet-stream"
            for chunk in r.iter_raw(65536):
                if mid is None and n >= 1024 * 1024:
                    # A slow client: the server must not read ahead the whole file.
                    time.sleep(0.5)
                    mid = vm(worker, "VmRSS")
                h.update(chunk)
                n += len(chunk)
    assert n == BIG_SIZE
    assert h.hexdigest() == tree.big_sha
    grew = max(vm(worker, "VmHWM") - hwm0, mid - rss0)
    assert grew < 8 * 1024 * 1024, f"the worker grew by {grew / 1048576:.1f} MiB serving a 20 MiB file"
    # A range deep inside the big file.
    big = (tree.root / "big.bin").read_bytes()
    r = get(srv, "/static/big.bin", Range="bytes=10000000-10000099")
    assert (r.status, r.body) == (206, big[10000000:10000100])
    assert content_range(r) == f"bytes 10000000-10000099/{BIG_SIZE}"


@needs_curl
def test_large_file_curl(srv_a, tree, tmp_path):
    out = tmp_path / "big.bin"
    curl("-o", str(out), srv_a.url + "/static/big.bin")
    assert out.stat().st_size == BIG_SIZE
    assert hashlib.sha256(out.read_bytes()).hexdigest() == tree.big_sha


# ---------------------------------------------------------------------------------------
# 11. start-up, relative directories, config file


def test_missing_directory_is_a_startup_error(run_cli, tmp_path):
    missing = tmp_path / "no-such-static-dir"
    line, out = startup_error(run_cli, "--static-map", f"/static={missing}", setting="static_map")
    assert str(missing) in line, out


def test_relative_directory_is_relative_to_cwd(start_server, tree):
    srv = start_server("testapp:app", "-w", "1", "--static-map", "/static=root", cwd=tree.base)
    check_full(get(srv, "/static/app.css"), CSS, CT_CSS)
    assert get(srv, "/static/missing.css").status == 404


def test_config_file(start_server, tree, tmp_path):
    conf = tmp_path / "conf.py"
    mounts = [f"/static={tree.root}", f"/assets={tree.assets}"]
    conf.write_text(f"static_map = {mounts!r}\nstatic_max_age = ['/assets=42']\nstatic_index = 'index.html'\n")
    srv = start_server("-c", str(conf), "-w", "1", "testapp:app")
    r = get(srv, "/static/app.css")
    check_full(r, CSS, CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=60"
    r = get(srv, "/assets/a.css")
    check_full(r, ASSET, CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=42"
    check_full(get(srv, "/static/sub/"), SUB_INDEX, CT_HTML)
    assert get(srv, "/static/missing.css").status == 404
    assert get(srv, "/").body == HELLO


# ---------------------------------------------------------------------------------------
# 12. HTTP/2 over TLS


def _openssl(*args, cwd):
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{res.stderr}")


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("static-certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=static test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )
    _openssl("req", "-new", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "srv.ext").write_text(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n"
    )
    _openssl(
        "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-sha256", "-extfile", "srv.ext", "-out", "srv.pem", cwd=d,
    )
    return str(d / "ca.pem"), str(d / "srv.pem"), str(d / "srv.key")


def test_http2_static_range(start_server, tree, tls_pair):
    pytest.importorskip("h2")
    ca, cert, key = tls_pair
    srv = start_server(
        "testapp:app", "-w", "1", "--certfile", cert, "--keyfile", key, "--http-protocols", "h2,h1",
        "--static-map", f"/static={tree.root}",
    )
    ctx = ssl.create_default_context(cafile=ca)
    base = f"https://127.0.0.1:{srv.port}"
    with httpx.Client(http2=True, verify=ctx, timeout=TIMEOUT, headers={"Accept-Encoding": "identity"}) as c:
        r = c.get(base + "/static/range.css", headers={"Range": "bytes=2-11"})
        assert r.http_version == "HTTP/2"
        assert r.status_code == 206
        assert r.headers["content-range"] == "bytes 2-11/62"
        assert r.content == ALPHA[2:12]
        r = c.get(base + "/static/app.css")
        assert r.http_version == "HTTP/2"
        assert (r.status_code, r.content) == (200, CSS)
        assert r.headers["content-type"] == CT_CSS
        assert int(r.headers["content-length"]) == len(CSS)
        assert c.get(base + "/static/app.css", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        r = c.head(base + "/static/app.css")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == len(CSS)
        assert c.get(base + "/static/missing.css").status_code == 404
        assert c.get(base + "/").content == HELLO


# ---------------------------------------------------------------------------------------
# 13. Django collectstatic


def collectstatic(tmp_path, static_root, settings="djangoproject.settings", extra_path=None):
    env = base_env({"STATIC_ROOT": str(static_root)})
    if extra_path:
        env["PYTHONPATH"] = str(extra_path) + os.pathsep + env["PYTHONPATH"]
    res = subprocess.run(
        [sys.executable, "-m", "django", "collectstatic", "--noinput", "--settings", settings],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_django_collectstatic(start_server, tmp_path):
    pytest.importorskip("django")
    static_root = tmp_path / "collected"
    collectstatic(tmp_path, static_root)
    base_css = (static_root / "admin/css/base.css").read_bytes()
    core_js = (static_root / "admin/js/core.js").read_bytes()
    srv = start_server("djangoproject.wsgi", "-w", "1", "--static-map", f"/static={static_root}")
    check_full(get(srv, "/static/admin/css/base.css"), base_css, CT_CSS)
    check_full(get(srv, "/static/admin/js/core.js"), core_js, CT_JS)
    with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        r = c.get("/static/admin/js/core.js", headers={"Range": "bytes=0-99"})
        assert r.status_code == 206 and r.content == core_js[:100]
        # The app's pages still work, and a missing static file does not reach Django.
        r = c.get("/")
        assert r.status_code == 200 and "<title>Hello Django</title>" in r.text
        r = c.get("/api/items/")
        assert r.json()["count"] == 2
        r = c.get("/static/admin/css/missing.css")
        assert r.status_code == 404


MANIFEST_SETTINGS = """\
from djangoproject.settings import *  # noqa: F401,F403

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
"""


def test_django_manifest_storage_immutable(start_server, tmp_path):
    pytest.importorskip("django")
    mod = tmp_path / "modules"
    mod.mkdir()
    (mod / "static_manifest_settings.py").write_text(MANIFEST_SETTINGS)
    static_root = tmp_path / "collected"
    collectstatic(tmp_path, static_root, settings="static_manifest_settings", extra_path=mod)
    hashed = json.loads((static_root / "staticfiles.json").read_text())["paths"]["admin/css/base.css"]
    assert re.fullmatch(r"admin/css/base\.[0-9a-f]{12}\.css", hashed), hashed
    srv = start_server("djangoproject.wsgi", "-w", "1", "--static-map", f"/static={static_root}", "--static-immutable")
    r = get(srv, f"/static/{hashed}")
    check_full(r, (static_root / hashed).read_bytes(), CT_CSS)
    assert r.headers["cache-control"] == IMMUTABLE
    r = get(srv, "/static/admin/css/base.css")
    check_full(r, (static_root / "admin/css/base.css").read_bytes(), CT_CSS)
    assert r.headers["cache-control"] == "public, max-age=60"


def test_changed_file_is_never_served_stale(spawn, tmp_path):
    """Small files are kept in memory per worker: a rewrite (same size, new mtime) and a
    replacement by rename (new inode, same mtime) must both be seen at once."""
    root = tmp_path / "changing"
    root.mkdir()
    f = root / "v.txt"
    f.write_bytes(b"version-1")
    os.utime(f, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    srv = spawn("--static-map", f"/static={root}", "testapp:app")
    assert get(srv, "/static/v.txt").body == b"version-1"
    assert get(srv, "/static/v.txt").body == b"version-1"
    f.write_bytes(b"version-2")
    os.utime(f, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_001))
    r = get(srv, "/static/v.txt")
    assert r.body == b"version-2"
    tmp = root / "v.tmp"
    tmp.write_bytes(b"version-3")
    os.utime(tmp, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_001))
    os.rename(tmp, f)
    assert get(srv, "/static/v.txt").body == b"version-3"
    assert get(srv, "/static/v.txt", range="bytes=8-").body == b"3"


def test_request_limits_apply_to_static_requests(spawn, tmp_path):
    """--limit-request-* are checked before a static file is looked up, as for the app."""
    d = tmp_path / "limits"
    d.mkdir()
    (d / "a.css").write_text("x")
    srv = spawn("--static-map", f"/static={d}", "--limit-request-line", "100", "--limit-request-fields", "5", "testapp:app")
    assert get(srv, "/static/a.css").status == 200
    assert get(srv, "/static/" + "a" * 120 + ".css").status == 414
    many = {f"x_h{i}".replace("_", "-"): "v" for i in range(10)}
    assert get(srv, "/static/a.css", **many).status == 431
