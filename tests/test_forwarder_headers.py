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
