"""Framework compatibility: a real Flask app and a real Django project served by ferricorn,
checked with requests, httpx, curl and (when installed) behind nginx."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")
pytest.importorskip("flask")
pytest.importorskip("django")

from conftest import free_port, recv_all  # noqa: E402

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

FLASK_APP = "flaskapp.app:app"
DJANGO_APP = "djangoproject.wsgi"

# ~1 MB of non-repeating bytes, so a truncated or reordered upload changes the digest.
UPLOAD = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(32768))
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
assert len(UPLOAD) == 1024 * 1024

TIMEOUT = 15


@pytest.fixture
def flask_srv(start_server):
    return start_server(FLASK_APP, "-w", "2", "--threads", "2")


@pytest.fixture
def django_srv(start_server):
    return start_server(DJANGO_APP, "-w", "2", "--threads", "2")


@pytest.fixture
def upload_file(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(UPLOAD)
    return p


def curl(*args, timeout=TIMEOUT):
    r = subprocess.run([CURL, "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)
    assert r.returncode == 0, f"curl {args} failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    return r.stdout


def split_head(raw):
    """Split `curl -D -` output (possibly several responses, e.g. after `100 Continue`)
    into (status, headers-dict-lowercase, body) of the final response."""
    while True:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if 100 <= status < 200 and rest.startswith(b"HTTP/"):
            raw = rest
            continue
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        return status, headers, rest


# --------------------------------------------------------------------------- Flask


def check_flask_index(status, ctype, text, cookies):
    assert status == 200
    assert ctype == "text/html; charset=utf-8"
    assert "<title>Hello Ferricorn</title>" in text
    assert "<li>one</li><li>two</li><li>three</li>" in text
    assert "escaped: &lt;b&gt;&amp;&lt;/b&gt;" in text
    assert cookies.get("visited") == "yes"


def test_flask_template_page_requests(flask_srv):
    r = requests.get(flask_srv.url + "/", timeout=TIMEOUT)
    check_flask_index(r.status_code, r.headers["Content-Type"], r.text, r.cookies)
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert r.headers["Server"] == "ferricorn"
    assert "HttpOnly" in r.headers["Set-Cookie"]
    r = requests.get(flask_srv.url + "/", params={"name": "Wörld & co"}, timeout=TIMEOUT)
    assert "<title>Hello Wörld &amp; co</title>" in r.text


def test_flask_template_page_httpx(flask_srv):
    r = httpx.get(flask_srv.url + "/", timeout=TIMEOUT)
    check_flask_index(r.status_code, r.headers["content-type"], r.text, r.cookies)
    assert r.http_version == "HTTP/1.1"


def test_flask_head_has_no_body(flask_srv):
    r = requests.head(flask_srv.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["Content-Length"]) > 100
    # The connection must still be usable: a HEAD body would desynchronise it.
    with flask_srv.connect() as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /api/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = recv_all(s)
    assert data.count(b"HTTP/1.1 200") == 2, data
    assert data.split(b"\r\n\r\n")[-1].startswith(b'{"count":2,'), data


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_flask_form_urlencoded(flask_srv, client):
    fields = {"name": "Zoë", "comment": "a&b=c d+e"}
    if client == "requests":
        r = requests.post(flask_srv.url + "/form", data=fields, timeout=TIMEOUT)
    else:
        r = httpx.post(flask_srv.url + "/form", data=fields, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["content_type"] == "application/x-www-form-urlencoded"
    assert body["fields"] == {"name": ["Zoë"], "comment": ["a&b=c d+e"]}
    assert body["files"] == {}


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_flask_multipart_upload_1mb(flask_srv, client):
    files = {"upload": ("blob.bin", UPLOAD, "application/octet-stream")}
    data = {"desc": "one megabyte"}
    if client == "requests":
        r = requests.post(flask_srv.url + "/form", data=data, files=files, timeout=TIMEOUT)
    else:
        r = httpx.post(flask_srv.url + "/form", data=data, files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["content_type"] == "multipart/form-data"
    assert body["fields"] == {"desc": ["one megabyte"]}
    assert body["files"]["upload"] == {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "size": len(UPLOAD),
        "sha256": UPLOAD_SHA,
    }


def test_flask_upload_chunked_request_body(flask_srv):
    """A multipart body sent with Transfer-Encoding: chunked (no Content-Length)."""
    boundary = "ferricornboundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"c.bin\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + UPLOAD + f"\r\n--{boundary}--\r\n".encode()

    def gen():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    r = requests.post(
        flask_srv.url + "/form",
        data=gen(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json()["files"]["upload"]["sha256"] == UPLOAD_SHA


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_flask_json_api(flask_srv, client):
    c = requests if client == "requests" else httpx
    r = c.get(flask_srv.url + "/api/items", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}], "count": 2}

    r = c.post(flask_srv.url + "/api/items", json={"name": "gamma"}, timeout=TIMEOUT)
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    assert r.headers["location"] == "/api/items/105"
    body = r.json()
    assert body["name"] == "gamma" and body["id"] == 105

    body_kw = "content" if client == "httpx" else "data"
    r = c.post(flask_srv.url + "/api/items", headers={"Content-Type": "application/json"}, timeout=TIMEOUT, **{body_kw: b"{not json"})
    assert r.status_code == 400
    assert r.json() == {"error": "name required"}


def test_flask_streaming_requests(flask_srv):
    with requests.get(flask_srv.url + "/stream", params={"n": 2000, "prefix": "row"}, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "Content-Length" not in r.headers
        assert r.headers["Transfer-Encoding"] == "chunked"
        lines = list(r.iter_lines(decode_unicode=True))
    assert lines == [f"row {i}" for i in range(2000)]


def test_flask_streaming_httpx(flask_srv):
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("GET", flask_srv.url + "/stream", params={"n": 50}) as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            text = "".join(r.iter_text())
        assert text == "".join(f"line {i}\n" for i in range(50))
        # The connection stays usable after a chunked response.
        assert c.get(flask_srv.url + "/api/items").json()["count"] == 2


def test_flask_send_file_range_and_conditional(flask_srv):
    src = (Path(__file__).parent / "apps" / "flaskapp" / "templates" / "index.html").read_bytes()
    with requests.Session() as s:
        r = s.get(flask_srv.url + "/download", timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.content == src
        assert r.headers["Content-Length"] == str(len(src))
        assert r.headers["Content-Disposition"] == "attachment; filename=page.html; filename*=UTF-8''p%C3%A1ge.html"
        etag = r.headers["ETag"]
        r = s.get(flask_srv.url + "/download", headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
        assert r.status_code == 206
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(src)}"
        assert r.content == src[10:20]
        r = s.get(flask_srv.url + "/download", headers={"If-None-Match": etag}, timeout=TIMEOUT)
        assert r.status_code == 304
        assert r.content == b""
        r = s.head(flask_srv.url + "/download", timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == b""
        assert s.get(flask_srv.url + "/download", timeout=TIMEOUT).content == src


def test_flask_generator_error_aborts_response(flask_srv):
    # Like Gunicorn: the headers are out, so the chunked body is cut short (no final 0-chunk)
    # and the connection closed; the client must see an incomplete body, not a clean end.
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        r = requests.get(flask_srv.url + "/stream-error", timeout=TIMEOUT)
    with pytest.raises(httpx.HTTPError):
        httpx.get(flask_srv.url + "/stream-error", timeout=TIMEOUT)
    flask_srv.wait_for("boom mid-stream", timeout=5.0)
    assert requests.get(flask_srv.url + "/api/items", timeout=TIMEOUT).status_code == 200


def test_flask_concurrent_uploads(flask_srv):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        data = hashlib.sha256(str(i).encode()).digest() * (4096 + i * 512)
        with requests.Session() as s:
            for _ in range(2):
                r = s.post(flask_srv.url + "/form", data={"i": str(i)}, files={"f": ("f.bin", data)}, timeout=30)
                assert r.status_code == 200
                body = r.json()
                assert body["fields"] == {"i": [str(i)]}
                assert body["files"]["f"]["sha256"] == hashlib.sha256(data).hexdigest()
        return True

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(one, range(16)))


def test_flask_404(flask_srv):
    for path in ("/missing", "/no/such/route"):
        r = requests.get(flask_srv.url + path, timeout=TIMEOUT)
        assert r.status_code == 404
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "Not Found" in r.text
    r = httpx.get(flask_srv.url + "/missing", timeout=TIMEOUT)
    assert r.status_code == 404


def test_flask_405(flask_srv):
    r = requests.delete(flask_srv.url + "/api/items", timeout=TIMEOUT)
    assert r.status_code == 405
    assert set(m.strip() for m in r.headers["Allow"].split(",")) >= {"GET", "POST"}


def test_flask_exception_is_500_and_logged(flask_srv):
    r = requests.get(flask_srv.url + "/error", timeout=TIMEOUT)
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Internal Server Error" in r.text
    assert "boom from flaskapp" not in r.text
    r = httpx.get(flask_srv.url + "/error", timeout=TIMEOUT)
    assert r.status_code == 500
    # Flask logs the traceback to stderr, which ferricorn's workers pass through.
    flask_srv.wait_for("RuntimeError: boom from flaskapp", timeout=5.0)
    # The worker keeps serving.
    assert requests.get(flask_srv.url + "/api/items", timeout=TIMEOUT).status_code == 200


def test_flask_keepalive_requests_session(flask_srv):
    with requests.Session() as s:
        seen = set()
        for i in range(6):
            r = s.get(flask_srv.url + "/whoami", timeout=TIMEOUT)
            assert r.status_code == 200
            assert r.headers.get("Connection", "").lower() != "close"
            seen.add((r.json()["remote_port"], r.json()["pid"]))
            # Mix in other routes on the same connection.
            assert s.post(flask_srv.url + "/api/items", json={"name": f"n{i}"}, timeout=TIMEOUT).status_code == 201
            assert s.get(flask_srv.url + "/missing", timeout=TIMEOUT).status_code == 404
        assert len(seen) == 1, f"connection was not reused: {seen}"
        # The cookie set by / is sent back by the session.
        s.get(flask_srv.url + "/", timeout=TIMEOUT)
        assert s.cookies.get("visited") == "yes"


def test_flask_keepalive_httpx_client(flask_srv):
    with httpx.Client(base_url=flask_srv.url, timeout=TIMEOUT) as c:
        ports = set()
        for i in range(6):
            r = c.get("/whoami")
            assert r.status_code == 200
            ports.add((r.json()["remote_port"], r.json()["pid"]))
            r = c.post("/form", files={"f": ("x.txt", b"x" * 1000, "text/plain")})
            assert r.json()["files"]["f"]["size"] == 1000
            assert c.get("/error").status_code == 500
        assert len(ports) == 1, f"connection was not reused: {ports}"


def test_flask_environ_basics(flask_srv):
    r = requests.get(flask_srv.url + "/whoami", timeout=TIMEOUT)
    body = r.json()
    assert body["remote_addr"] == "127.0.0.1"
    assert body["scheme"] == "http"
    assert body["host"] == f"127.0.0.1:{flask_srv.port}"
    assert body["url_root"] == f"http://127.0.0.1:{flask_srv.port}/"


def test_flask_forwarded_proto_from_trusted_proxy(flask_srv):
    # Gunicorn's defaults: forwarded_allow_ips="127.0.0.1,::1" and secure_scheme_headers
    # {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}.
    # 127.0.0.1 is in the default forwarded_allow_ips, so X-Forwarded-Proto is honoured.
    r = requests.get(flask_srv.url + "/whoami", headers={"X-Forwarded-Proto": "https"}, timeout=TIMEOUT)
    assert r.json()["scheme"] == "https"
    assert r.json()["url_root"] == f"https://127.0.0.1:{flask_srv.port}/"
    r = requests.get(flask_srv.url + "/whoami", headers={"X-Forwarded-Ssl": "on"}, timeout=TIMEOUT)
    assert r.json()["scheme"] == "https"
    r = requests.get(flask_srv.url + "/whoami", headers={"X-Forwarded-Proto": "http"}, timeout=TIMEOUT)
    assert r.json()["scheme"] == "http"


@needs_curl
def test_flask_curl_template_page(flask_srv):
    status, headers, body = split_head(curl("-D", "-", flask_srv.url + "/"))
    assert status == 200
    assert headers["content-type"] == ["text/html; charset=utf-8"]
    assert int(headers["content-length"][0]) == len(body)
    assert any(c.startswith("visited=yes") for c in headers["set-cookie"])
    assert b"<title>Hello Ferricorn</title>" in body
    # HTTP/1.0 request: no chunked framing, the body is delimited by close.
    raw = curl("-0", "-D", "-", flask_srv.url + "/stream?n=3")
    status, headers, body = split_head(raw)
    assert status == 200
    assert "transfer-encoding" not in headers
    assert body == b"line 0\nline 1\nline 2\n"


@needs_curl
def test_flask_curl_form_and_upload(flask_srv, upload_file):
    out = json.loads(curl("--data", "name=curl&comment=hello+world", flask_srv.url + "/form"))
    assert out["fields"] == {"name": ["curl"], "comment": ["hello world"]}
    assert out["content_type"] == "application/x-www-form-urlencoded"
    # curl sends `Expect: 100-continue` for a body this large.
    out = json.loads(curl("-F", "desc=big", "-F", f"upload=@{upload_file};type=application/octet-stream", flask_srv.url + "/form"))
    assert out["fields"] == {"desc": ["big"]}
    assert out["files"]["upload"]["sha256"] == UPLOAD_SHA
    assert out["files"]["upload"]["filename"] == "blob.bin"
    # And without Expect.
    out = json.loads(curl("-H", "Expect:", "-F", f"upload=@{upload_file}", flask_srv.url + "/form"))
    assert out["files"]["upload"]["size"] == len(UPLOAD)


@needs_curl
def test_flask_curl_json_and_keepalive(flask_srv):
    out = curl("-H", "Content-Type: application/json", "--data", '{"name":"delta"}', "-w", "\n%{http_code}", flask_srv.url + "/api/items")
    body, _, code = out.rpartition(b"\n")
    assert code == b"201"
    assert json.loads(body)["name"] == "delta"
    # Several URLs in one curl run share one connection.
    url = flask_srv.url + "/whoami"
    out = curl("-w", "##connects=%{num_connects}##", url, url, url).decode()
    connects = [int(n) for n in re.findall(r"##connects=(\d+)##", out)]
    ports = {json.loads(p)["remote_port"] for p in re.split(r"##connects=\d+##", out) if p.strip()}
    assert connects == [1, 0, 0], out
    assert len(ports) == 1
    out = curl("-o", "/dev/null", "-w", "%{http_code}", flask_srv.url + "/missing")
    assert out == b"404"
    out = curl("-o", "/dev/null", "-w", "%{http_code}", flask_srv.url + "/error")
    assert out == b"500"


# --------------------------------------------------------------------------- Django


CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def test_django_template_page(django_srv):
    for c in (requests, httpx):
        r = c.get(django_srv.url + "/", timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>Hello Django</title>" in r.text
        assert "<li>one</li><li>two</li><li>three</li>" in r.text
        assert "escaped: &lt;b&gt;&amp;&lt;/b&gt;" in r.text
        assert r.headers["x-content-type-options"] == "nosniff"
        assert int(r.headers["content-length"]) == len(r.content)


def test_django_csrf_form_requests(django_srv):
    with requests.Session() as s:
        r = s.get(django_srv.url + "/form/", timeout=TIMEOUT)
        assert r.status_code == 200
        token = CSRF_INPUT.search(r.text).group(1)
        assert s.cookies.get("csrftoken")
        r = s.post(django_srv.url + "/form/", data={"csrfmiddlewaretoken": token, "name": "Zoë", "tag": ["a", "b"]}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:500]
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"name": "Zoë", "tags": ["a", "b"], "ok": True}
        # The X-CSRFToken header works too (with the cookie).
        r = s.post(django_srv.url + "/form/", data={"name": "hdr"}, headers={"X-CSRFToken": s.cookies["csrftoken"]}, timeout=TIMEOUT)
        assert r.status_code == 200
        # A token that does not match the cookie is rejected.
        r = s.post(django_srv.url + "/form/", data={"csrfmiddlewaretoken": "x" * 64, "name": "bad"}, timeout=TIMEOUT)
        assert r.status_code == 403
    # No cookie, no token.
    r = requests.post(django_srv.url + "/form/", data={"name": "nope"}, timeout=TIMEOUT)
    assert r.status_code == 403
    assert "CSRF" in r.text or "Forbidden" in r.text
    # The token without its cookie.
    r = requests.post(django_srv.url + "/form/", data={"csrfmiddlewaretoken": token, "name": "nope"}, timeout=TIMEOUT)
    assert r.status_code == 403


def test_django_csrf_form_httpx(django_srv):
    with httpx.Client(base_url=django_srv.url, timeout=TIMEOUT) as c:
        r = c.get("/form/")
        assert r.status_code == 200
        token = CSRF_INPUT.search(r.text).group(1)
        assert c.cookies.get("csrftoken")
        r = c.post("/form/", data={"csrfmiddlewaretoken": token, "name": "httpx"})
        assert r.status_code == 200
        assert r.json()["name"] == "httpx"
    r = httpx.post(django_srv.url + "/form/", data={"name": "nope"}, timeout=TIMEOUT)
    assert r.status_code == 403


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_django_json_api(django_srv, client):
    c = requests if client == "requests" else httpx
    r = c.get(django_srv.url + "/api/items/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}], "count": 2}
    r = c.post(django_srv.url + "/api/items/", json={"name": "gamma"}, timeout=TIMEOUT)
    assert r.status_code == 201
    assert r.json()["name"] == "gamma"


def test_django_404_500_redirect_and_host(django_srv):
    r = requests.get(django_srv.url + "/nope/", timeout=TIMEOUT)
    assert r.status_code == 404
    assert "Not Found" in r.text
    # CommonMiddleware's APPEND_SLASH redirect uses the Host header.
    r = requests.get(django_srv.url + "/form", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 301
    assert r.headers["Location"] == "/form/"
    r = requests.get(django_srv.url + "/error/", timeout=TIMEOUT)
    assert r.status_code == 500
    assert "Server Error (500)" in r.text
    assert "boom" not in r.text
    django_srv.wait_for("RuntimeError: boom from djangoproject", timeout=5.0)
    # DisallowedHost -> 400.
    r = requests.get(django_srv.url + "/", headers={"Host": "evil.example"}, timeout=TIMEOUT)
    assert r.status_code == 400
    r = requests.get(django_srv.url + "/whoami/", headers={"Host": "localhost"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["host"] == "localhost"


def test_django_keepalive(django_srv):
    with requests.Session() as s:
        ports = {s.get(django_srv.url + "/whoami/", timeout=TIMEOUT).json()["remote_port"] for _ in range(5)}
        assert s.get(django_srv.url + "/nope/", timeout=TIMEOUT).status_code == 404
        assert s.get(django_srv.url + "/error/", timeout=TIMEOUT).status_code == 500
        ports.add(s.get(django_srv.url + "/whoami/", timeout=TIMEOUT).json()["remote_port"])
        assert len(ports) == 1, ports
    with httpx.Client(base_url=django_srv.url, timeout=TIMEOUT) as c:
        ports = {c.get("/whoami/").json()["remote_port"] for _ in range(5)}
        assert len(ports) == 1, ports


def test_django_streaming_response(django_srv):
    with requests.get(django_srv.url + "/stream/", params={"n": 300}, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/plain"
        assert r.headers.get("Transfer-Encoding") == "chunked"
        assert r.text == "".join(f"chunk {i}\n" for i in range(300))
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("GET", django_srv.url + "/stream/", params={"n": 3}) as r:
            assert b"".join(r.iter_bytes()) == b"chunk 0\nchunk 1\nchunk 2\n"


@needs_curl
def test_django_curl(django_srv, tmp_path):
    status, headers, body = split_head(curl("-D", "-", django_srv.url + "/"))
    assert status == 200
    assert headers["content-type"] == ["text/html; charset=utf-8"]
    assert b"<title>Hello Django</title>" in body
    jar = tmp_path / "cookies.txt"
    page = curl("-c", str(jar), django_srv.url + "/form/").decode()
    token = CSRF_INPUT.search(page).group(1)
    out = curl("-b", str(jar), "--data", f"csrfmiddlewaretoken={token}&name=curl", django_srv.url + "/form/")
    assert json.loads(out) == {"name": "curl", "tags": [], "ok": True}
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "--data", "name=curl", django_srv.url + "/form/")
    assert out == b"403"
    out = curl("-H", "Content-Type: application/json", "--data", '{"name":"c"}', django_srv.url + "/api/items/")
    assert json.loads(out)["name"] == "c"


# --------------------------------------------------------------------------- nginx


def find_nginx():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 20m;
    upstream ferricorn {{
        server {upstream};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
            proxy_pass http://ferricorn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        # Streams request and response bodies: a chunked client body goes upstream chunked.
        location /nobuf/ {{
            rewrite ^/nobuf(/.*)$ $1 break;
            proxy_pass http://ferricorn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_proxy():
    exe = find_nginx()
    if exe is None:
        pytest.skip("nginx is not installed")
    procs = []
    tmpdirs = []

    def start(upstream):
        tmp = Path(tempfile.mkdtemp(prefix="fcng-"))
        tmpdirs.append(tmp)
        port = free_port()
        # As root nginx's workers would switch to `nobody`, which cannot reach the socket in a
        # private tmp dir: keep them as root.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, upstream=upstream, user=user))
        log = open(tmp / "nginx-stdout.log", "wb")
        proc = subprocess.Popen([exe, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")], stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                errlog = (tmp / "nginx-error.log").read_text(errors="replace") if (tmp / "nginx-error.log").exists() else ""
                pytest.fail(f"nginx exited with {proc.returncode}: {(tmp / 'nginx-stdout.log').read_text()} {errlog}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return f"http://127.0.0.1:{port}", tmp
            except OSError:
                time.sleep(0.05)
        pytest.fail("nginx did not start")

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    for d in tmpdirs:
        shutil.rmtree(d, ignore_errors=True)


def start_flask_unix(start_server):
    sockdir = Path(tempfile.mkdtemp(prefix="fcsock-"))
    sock = sockdir / "ferricorn.sock"
    srv = start_server(FLASK_APP, "-w", "2", "--threads", "2", "-b", f"unix:{sock}", bind=False, wait=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise AssertionError(f"ferricorn exited with {srv.proc.returncode}:\n{srv.log()}")
        if sock.exists() and "Booting worker" in srv.log():
            time.sleep(0.15)
            return srv, sock
        time.sleep(0.05)
    raise AssertionError(f"server did not start:\n{srv.log()}")


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_nginx_reverse_proxy_flask(start_server, nginx_proxy, transport, upload_file):
    if transport == "unix":
        srv, sock = start_flask_unix(start_server)
        upstream = f"unix:{sock}"
    else:
        srv = start_server(FLASK_APP, "-w", "2", "--threads", "2")
        upstream = f"127.0.0.1:{srv.port}"
    url, ngtmp = nginx_proxy(upstream)
    try:
        with requests.Session() as s:
            r = s.get(url + "/", timeout=TIMEOUT)
            check_flask_index(r.status_code, r.headers["Content-Type"], r.text, r.cookies)
            assert r.headers["Server"].startswith("nginx")

            files = {"upload": ("blob.bin", UPLOAD, "application/octet-stream")}
            r = s.post(url + "/form", data={"desc": "via nginx"}, files=files, timeout=TIMEOUT)
            assert r.status_code == 200, r.text[:500]
            assert r.json()["files"]["upload"]["sha256"] == UPLOAD_SHA
            assert r.json()["fields"] == {"desc": ["via nginx"]}

            r = s.post(url + "/form", data={"name": "proxied"}, timeout=TIMEOUT)
            assert r.json()["fields"] == {"name": ["proxied"]}

            r = s.get(url + "/api/items", timeout=TIMEOUT)
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/json"
            assert r.json()["count"] == 2
            r = s.post(url + "/api/items", json={"name": "gamma"}, timeout=TIMEOUT)
            assert r.status_code == 201 and r.json()["name"] == "gamma"

            r = s.get(url + "/stream", params={"n": 500}, timeout=TIMEOUT)
            assert r.status_code == 200
            assert r.text == "".join(f"line {i}\n" for i in range(500))

            assert s.get(url + "/missing", timeout=TIMEOUT).status_code == 404
            assert s.get(url + "/error", timeout=TIMEOUT).status_code == 500

            who = s.get(url + "/whoami", timeout=TIMEOUT).json()
            assert who["host"] == url.split("//", 1)[1]
            assert who["forwarded_for"] == "127.0.0.1"
            # nginx reuses its upstream connections (keepalive 8): several requests, few ports.
            ports = {s.get(url + "/whoami", timeout=TIMEOUT).json()["remote_port"] for _ in range(10)}
            if transport == "tcp":
                assert len(ports) <= 2, ports

        # Unbuffered proxying of a chunked upload and a streamed response.
        boundary = "nginxboundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="c.bin"\r\n\r\n'.encode()
            + UPLOAD
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = requests.post(
            url + "/nobuf/form",
            data=(body[i : i + 50000] for i in range(0, len(body), 50000)),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text[:500]
        assert r.json()["files"]["upload"]["sha256"] == UPLOAD_SHA
        for _ in range(3):
            r = requests.get(url + "/nobuf/stream", params={"n": 1000}, timeout=TIMEOUT)
            assert r.text == "".join(f"line {i}\n" for i in range(1000))
        with httpx.Client(timeout=TIMEOUT) as c:
            r = c.post(url + "/form", files={"upload": ("blob.bin", UPLOAD, "application/octet-stream")})
            assert r.json()["files"]["upload"]["sha256"] == UPLOAD_SHA
        if CURL:
            out = json.loads(curl("-F", f"upload=@{upload_file}", url + "/form"))
            assert out["files"]["upload"]["sha256"] == UPLOAD_SHA
    finally:
        errlog = ngtmp / "nginx-error.log"
        errors = errlog.read_text(errors="replace") if errlog.exists() else ""
    # nginx logs upstream failures ("upstream prematurely closed", "connect() failed") at error level.
    assert "[error]" not in errors and "[crit]" not in errors, errors
