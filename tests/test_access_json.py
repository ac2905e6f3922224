"""--access-log-json: one JSON object per access-log line, with the values of Gunicorn's
atoms."""

import json
import socket

from conftest import recv_all


def test_json_access_lines(start_server):
    srv = start_server("--access-logfile", "-", "--access-log-json", "testapp:app")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(
            b"GET /environ?a=1&b=%22x%22 HTTP/1.1\r\nHost: x\r\nUser-Agent: tool \"quoted\"\\1\r\n"
            b"Referer: http://r.example/\r\nAuthorization: Basic dXNlcjpwdw==\r\nConnection: close\r\n\r\n"
        )
        body = recv_all(s).partition(b"\r\n\r\n")[2]
    srv.wait_for('"method": "GET"')
    line = next(l for l in srv.log().splitlines() if l.startswith("{"))
    rec = json.loads(line)
    assert rec["remote_addr"] == "127.0.0.1" and rec["user"] == "user"
    assert rec["request"] == "GET /environ?a=1&b=%22x%22 HTTP/1.1"
    assert (rec["method"], rec["path"], rec["query"], rec["protocol"]) == ("GET", "/environ", "a=1&b=%22x%22", "HTTP/1.1")
    assert rec["status"] == 200 and rec["bytes"] == len(body)
    assert rec["referer"] == "http://r.example/" and rec["user_agent"] == 'tool "quoted"\\1'
    assert isinstance(rec["duration_us"], int) and rec["pid"] > 0
    assert rec["time"][:4].isdigit() and "T" in rec["time"]


def test_json_lines_for_requests_the_server_refuses(start_server):
    srv = start_server("--access-logfile", "-", "--access-log-json", "testapp:app")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        recv_all(s)
    srv.wait_for('"status": 400')
    rec = json.loads(next(l for l in srv.log().splitlines() if l.startswith("{")))
    assert rec["status"] == 400 and rec["user_agent"] is None
