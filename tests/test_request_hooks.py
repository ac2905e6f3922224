"""pre_request / post_request hooks from the config file (WSGI)."""

import json
import time
import urllib.error
import urllib.request

import pytest

CONF = '''
import json

def pre_request(worker, req):
    with open({log!r}, "a") as f:
        f.write(json.dumps({{"hook": "pre", "method": req.method, "path": req.path, "query": req.query,
                            "uri": req.uri, "version": list(req.version),
                            "ua": dict(req.headers).get("USER-AGENT"), "pid": worker.pid}}) + "\\n")

def post_request(worker, req, environ, resp):
    with open({log!r}, "a") as f:
        f.write(json.dumps({{"hook": "post", "path": req.path, "status": resp.status, "code": resp.status_code,
                            "sent": resp.sent, "path_info": environ["PATH_INFO"]}}) + "\\n")
'''


def read_events(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"hooks wrote {path.read_text() if path.exists() else 'nothing'}")


def test_pre_and_post_request(start_server, tmp_path):
    log = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(CONF.format(log=str(log)))
    srv = start_server("-c", str(conf), "testapp:app")
    req = urllib.request.Request(srv.url + "/environ?a=1", headers={"User-Agent": "hook-test"})
    urllib.request.urlopen(req, timeout=5).read()
    urllib.request.urlopen(srv.url + "/stream?3", timeout=5).read()
    events = read_events(log, 4)
    pre, post = events[0], events[1]
    assert pre == {**pre, "hook": "pre", "method": "GET", "path": "/environ", "query": "a=1", "uri": "/environ?a=1", "version": [1, 1], "ua": "hook-test"}
    assert post["hook"] == "post" and post["code"] == 200 and post["status"] == "200 OK"
    assert post["sent"] > 0 and post["path_info"] == "/environ"
    stream_post = events[3]
    assert stream_post["path"] == "/stream" and stream_post["sent"] == len(b"chunk 0\nchunk 1\nchunk 2\n")


def test_post_request_with_two_arguments_and_a_failing_hook(start_server, tmp_path):
    conf = tmp_path / "h.conf.py"
    marker = tmp_path / "marker"
    conf.write_text(
        f"def post_request(worker, req):\n    open({str(marker)!r}, 'a').write(req.path + '\\n')\n"
        "def pre_request(worker, req):\n    raise ValueError('hook bug')\n"
    )
    srv = start_server("-c", str(conf), "testapp:app")
    # Gunicorn: the hook's exception fails the request (500), and post_request still runs.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(srv.url + "/", timeout=5).read()
    assert err.value.code == 500
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.05)
    assert marker.read_text() == "/\n"
    srv.wait_for("hook bug")
    assert "Error handling request" in srv.log(), srv.log()


def test_pre_and_post_request_on_asgi(start_server, tmp_path):
    """Gunicorn's ASGI worker runs the same hooks; `environ` is the reduced one."""
    log = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(CONF.format(log=str(log)))
    srv = start_server("-c", str(conf), "asgi_raw:app")
    req = urllib.request.Request(srv.url + "/cl?a=1", headers={"User-Agent": "hook-test"})
    body = urllib.request.urlopen(req, timeout=5).read()
    try:
        urllib.request.urlopen(srv.url + "/status/404", timeout=5).read()
    except urllib.error.HTTPError as e:
        assert e.code == 404
    try:
        urllib.request.urlopen(srv.url + "/raise-before", timeout=5).read()
    except urllib.error.HTTPError as e:
        assert e.code == 500
    events = read_events(log, 6)
    pre, post = events[0], events[1]
    assert pre == {**pre, "hook": "pre", "method": "GET", "path": "/cl", "query": "a=1", "uri": "/cl?a=1",
                   "version": [1, 1], "ua": "hook-test"}
    assert post["hook"] == "post" and post["code"] == 200 and post["status"] == "200 OK"
    assert post["sent"] == len(body) and post["path_info"] == "/cl"
    assert events[3]["code"] == 404 and events[3]["status"] == "404 Not Found"
    assert events[4]["path"] == "/raise-before" and events[5]["code"] == 500


def test_failing_asgi_hooks(start_server, tmp_path):
    """As in Gunicorn's ASGI worker: a raising pre_request fails the request (500), a
    raising post_request is only logged."""
    conf = tmp_path / "h.conf.py"
    conf.write_text(
        "def pre_request(worker, req):\n    if req.path == '/pre-fails':\n        raise ValueError('pre bug')\n"
        "def post_request(worker, req):\n    raise ValueError('post bug')\n"
    )
    srv = start_server("-c", str(conf), "asgi_raw:app")
    with urllib.request.urlopen(srv.url + "/cl", timeout=5) as r:
        assert r.status == 200
    srv.wait_for("post bug")
    assert "Exception in post_request hook" in srv.log()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(srv.url + "/pre-fails", timeout=5).read()
    assert err.value.code == 500
    srv.wait_for("pre bug")


def test_worker_nr_and_server_workers(start_server, tmp_path):
    """Attributes hooks use in practice: `worker.nr` counts requests, `server.WORKERS`
    maps the pids of running workers."""
    log = tmp_path / "attrs.log"
    conf = tmp_path / "attrs.conf.py"
    conf.write_text(
        "def pre_fork(server, worker):\n"
        f"    open({str(log)!r}, 'a').write(f'pre_fork {{len(server.WORKERS)}} {{worker.pid}}\\n')\n"
        "def pre_request(worker, req):\n"
        f"    open({str(log)!r}, 'a').write(f'pre {{worker.nr}} {{req.remote_addr[0]}} {{type(req.remote_addr[1]).__name__}}\\n')\n"
        "def post_request(worker, req):\n"
        f"    open({str(log)!r}, 'a').write(f'nr {{worker.nr}} {{worker.max_requests}}\\n')\n"
    )
    srv = start_server("-c", str(conf), "-w", "2", "--max-requests", "100", "testapp:app")
    for _ in range(3):
        with urllib.request.urlopen(srv.url + "/", timeout=5):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log.read_text().count("nr ") < 3:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert lines[:2] == ["pre_fork 0 [booting]", "pre_fork 1 [booting]"], lines
    counts = sorted(int(l.split()[1]) for l in lines if l.startswith("nr "))
    # Two workers share three requests: each counts its own from 1.
    assert counts[0] == 1 and counts[-1] <= 3 and len(counts) == 3, lines
    assert all(l.endswith(" 100") for l in lines if l.startswith("nr ")), lines
    # Gunicorn counts a request after pre_request: the hook sees the requests before it.
    # `req.remote_addr` is the peer's (ip, port).
    pre = sorted(l for l in lines if l.startswith("pre "))
    assert pre[0] == "pre 0 127.0.0.1 int" and len(pre) == 3, lines


def test_hook_objects_carry_gunicorns_attributes(start_server, tmp_path):
    """What Gunicorn's objects offer hooks in practice: `server.LISTENERS` (printed as
    the Listening at line), `worker.wsgi` (the app), `worker.booted` (False until
    post_worker_init has run), `worker.max_requests` (sys.maxsize when unset) and
    `worker.timeout` (half the timeout)."""
    log = tmp_path / "attrs.json"
    conf = tmp_path / "attrs.conf.py"
    conf.write_text(
        "import json, sys\n"
        "def when_ready(server):\n"
        f"    open({str(log)!r}, 'a').write(json.dumps({{'listeners': [str(l) for l in server.LISTENERS]}}) + '\\n')\n"
        "def post_worker_init(worker):\n"
        f"    open({str(log)!r}, 'a').write(json.dumps({{'booted': worker.booted, 'wsgi': callable(worker.wsgi),"
        " 'max': worker.max_requests == sys.maxsize, 'timeout': worker.timeout}) + '\\n')\n"
    )
    srv = start_server("-c", str(conf), "-t", "30", "testapp:app")
    events = read_events(log, 2)
    assert events[0] == {"listeners": [f"http://127.0.0.1:{srv.port}"]}, events
    assert events[1] == {"booted": False, "wsgi": True, "max": True, "timeout": 15.0}, events


def test_hook_cfg_has_gunicorns_computed_attributes(start_server, tmp_path):
    # Gunicorn's Config properties that configs and hooks read.
    log = tmp_path / "cfg.json"
    conf = tmp_path / "cfg.conf.py"
    conf.write_text(
        "import json, os\n"
        "raw_env = ['HOOK_ENV=1']\n"
        "threads = 2\n"
        "def when_ready(server):\n"
        "    c = server.cfg\n"
        f"    open({str(log)!r}, 'a').write(json.dumps({{'address': c.address, 'uid': c.uid == os.geteuid(),"
        " 'gid': c.gid == os.getegid(), 'is_ssl': bool(c.is_ssl), 'env': c.env, 'wcs': c.worker_class_str,"
        " 'proc_name': c.proc_name, 'bind': c.settings['bind'].value, 'get': c.settings['workers'].get(),"
        " 'software': os.environ.get('SERVER_SOFTWARE', '')}) + '\\n')\n"
    )
    srv = start_server("-c", str(conf), "testapp:app")
    (event,) = read_events(log, 1)
    assert event == {
        "address": [["127.0.0.1", srv.port]],
        "uid": True,
        "gid": True,
        "is_ssl": False,
        "env": {"HOOK_ENV": "1"},
        "wcs": "gthread",
        "proc_name": "testapp:app",
        "bind": [f"127.0.0.1:{srv.port}"],
        "get": 1,
        "software": event["software"],
    }, event
    assert event["software"].startswith("ferricorn/"), event


def test_request_and_response_objects_have_gunicorns_fields(start_server, tmp_path):
    """What post_request hooks read from Gunicorn's Request and Response besides the
    basics: `resp.response_length` (the app's Content-Length, else None), `headers_sent`,
    `chunked`, `req.should_close()`, `req.fragment`, `req.trailers`."""
    log = tmp_path / "fields.json"
    conf = tmp_path / "fields.conf.py"
    conf.write_text(
        "import json\n"
        "def post_request(worker, req, environ, resp):\n"
        f"    open({str(log)!r}, 'a').write(json.dumps({{'path': req.path, 'length': resp.response_length,"
        " 'headers_sent': resp.headers_sent, 'chunked': resp.chunked, 'close': req.should_close(),"
        " 'fragment': req.fragment, 'trailers': req.trailers}) + '\\n')\n"
    )
    srv = start_server("-c", str(conf), "testapp:app")
    srv.raw(b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    srv.raw(b"GET /stream?2 HTTP/1.1\r\nHost: x\r\n\r\n", read_until_close=False)
    events = read_events(log, 2)
    assert events[0] == {"path": "/echo", "length": 3, "headers_sent": True, "chunked": False, "close": True,
                         "fragment": "", "trailers": []}, events
    assert events[1] == {**events[1], "path": "/stream", "length": None, "chunked": True, "close": False}, events
