"""--forwarder-headers: headers spelled with `_` (SCRIPT_NAME, PATH_INFO, REMOTE_USER)
are honoured only from peers in --forwarded-allow-ips, as in Gunicorn; a trusted
SCRIPT_NAME mounts the app under that prefix."""

import json
import socket

from conftest import recv_all


def environ(srv, path="/environ", headers=b""):
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        raw = recv_all(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, (json.loads(body) if status == 200 else body)


def test_trusted_proxy_sets_script_name_and_forwarder_headers(start_server):
    srv = start_server("--forwarded-allow-ips", "127.0.0.1", "--forwarder-headers", "SCRIPT_NAME,REMOTE_USER", "testapp:app")
    status, env = environ(srv, "/app/environ", b"SCRIPT_NAME: /app\r\nREMOTE_USER: alice\r\nOTHER_THING: x\r\n")
    assert status == 200, env
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/environ")
    assert env["HTTP_SCRIPT_NAME"] == "/app" and env["HTTP_REMOTE_USER"] == "alice"
    # Not listed: dropped, as every underscore header is by default.
    assert "HTTP_OTHER_THING" not in env


def test_trusted_script_name_that_does_not_prefix_the_path_is_refused(start_server):
    srv = start_server("--forwarded-allow-ips", "127.0.0.1", "testapp:app")
    status, _ = environ(srv, "/other/environ", b"SCRIPT_NAME: /app\r\n")
    assert status == 400


def test_untrusted_peer_cannot_set_them(start_server):
    srv = start_server("--forwarded-allow-ips", "10.0.0.1", "--forwarder-headers", "*", "testapp:app")
    status, env = environ(srv, "/environ", b"SCRIPT_NAME: /app\r\nREMOTE_USER: mallory\r\n")
    assert status == 200
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/environ"
    assert "HTTP_SCRIPT_NAME" not in env and "HTTP_REMOTE_USER" not in env


def test_header_map_refuse_still_lets_trusted_forwarder_headers_through(start_server):
    srv = start_server("--header-map", "refuse", "--forwarded-allow-ips", "127.0.0.1", "testapp:app")
    assert environ(srv, "/app/environ", b"SCRIPT_NAME: /app\r\n")[0] == 200
    assert environ(srv, "/environ", b"X_EVIL: 1\r\n")[0] == 400


def test_forwarded_header_from_a_trusted_proxy(start_server):
    srv = start_server("--forwarded-header", "--forwarded-allow-ips", "127.0.0.1", "testapp:app")
    status, env = environ(
        srv, "/environ", b'Forwarded: for=198.51.100.7;proto=http, for="[2001:db8::5]:4711";proto=https\r\n'
    )
    assert status == 200
    # The last element is the trusted peer's own view; earlier ones are ignored.
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["wsgi.url_scheme"]) == ("2001:db8::5", "4711", "https")
    status, env = environ(srv, "/environ", b"Forwarded: for=unknown;proto=https\r\n")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "https"


def test_forwarded_header_ignored_without_the_setting_or_trust(start_server):
    hdr = b"Forwarded: for=198.51.100.7;proto=https\r\n"
    srv = start_server("--forwarded-allow-ips", "127.0.0.1", "testapp:app")
    env = environ(srv, "/environ", hdr)[1]
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    srv2 = start_server("--forwarded-header", "--forwarded-allow-ips", "10.0.0.1", "testapp:app")
    env = environ(srv2, "/environ", hdr)[1]
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
