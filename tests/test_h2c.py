"""--http2-cleartext prior-knowledge: HTTP/2 without TLS, for peers in
--forwarded-allow-ips only (as Gunicorn 27), HTTP/1.1 still served on the same port."""

import json
import subprocess

import httpx


def curl(*args):
    res = subprocess.run(["curl", "-s", "--max-time", "5", *args], capture_output=True, text=True)
    return res.returncode, res.stdout


def test_prior_knowledge_from_a_trusted_peer(start_server):
    srv = start_server("--http2-cleartext", "prior-knowledge", "testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert (rc, out) == (0, "2 200")
    rc, out = curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert (rc, out) == (0, "1.1 200")
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        r = c.post(srv.url + "/echo", content=b"x" * 100_000)
        assert r.http_version == "HTTP/2" and r.content == b"x" * 100_000
        env = c.get(srv.url + "/environ").json()
        assert env["SERVER_PROTOCOL"] == "HTTP/2.0" and env["wsgi.url_scheme"] == "http"


def test_untrusted_peer_gets_no_h2c(start_server):
    srv = start_server("--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips", "10.0.0.1", "testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out != "2 200", out
    assert curl("-o", "/dev/null", "-w", "%{http_code}", srv.url + "/")[1] == "200"


def test_off_by_default(start_server):
    srv = start_server("testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out != "2 200", out


def test_upgrade_mode_warns(start_server):
    srv = start_server("--http2-cleartext", "both", "testapp:app")
    assert "only prior knowledge is served" in srv.log()
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out == "2 200"
