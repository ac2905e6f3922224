import signal
import urllib.request


def test_serves_hello_and_stops_cleanly(start_server):
    srv = start_server("testapp:app", "-w", "2")
    with urllib.request.urlopen(srv.url + "/") as r:
        assert r.status == 200
        assert r.read() == b"Hello, World!\n"
        assert r.headers["Server"] == "ferricorn"
        assert r.headers["Date"]
    assert srv.stop(signal.SIGTERM) == 0
    assert "Shutting down: Master" in srv.log()
