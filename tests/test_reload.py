"""--reload: a changed module restarts the workers; a change that does not compile is
reported and the old code keeps serving; a broken import is shown, not fatal."""

import time
import urllib.error
import urllib.request

from conftest import hook_log_config, hook_log_lines, wait_until

APP_V1 = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"VERSION"]
'''


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_body(url, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(url)
            if last[1] == expected:
                return last
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"never got {expected!r}, last {last!r}")


def write(path, text):
    path.write_text(text)
    # Make sure the modification time moves even on coarse-grained filesystems.
    now = time.time()
    import os

    os.utime(path, (now + 1, now + 1))


def test_reload_on_change_and_syntax_error_keeps_old_code(start_server, tmp_path):
    mod = tmp_path / "reload_app.py"
    write(mod, APP_V1.replace("VERSION", "v1"))
    srv = start_server("--reload", "--chdir", str(tmp_path), "reload_app:app")
    assert get(srv.url)[1] == "v1"
    time.sleep(1.2)
    write(mod, APP_V1.replace("VERSION", "v2"))
    wait_for_body(srv.url, "v2")
    assert "Worker reloading:" in srv.log() and "reload_app.py modified" in srv.log()

    time.sleep(1.2)
    write(mod, "def app(:\n")
    time.sleep(3)
    assert get(srv.url)[1] == "v2", "the old code keeps serving while the file does not compile"
    assert "does not compile" in srv.log() and "SyntaxError" in srv.log()

    write(mod, APP_V1.replace("VERSION", "v3"))
    wait_for_body(srv.url, "v3")


def test_reload_extra_file_glob(start_server, tmp_path):
    (tmp_path / "reload_app2.py").write_text(APP_V1.replace("VERSION", "ok"))
    conf = tmp_path / "templates"
    conf.mkdir()
    (conf / "a.html").write_text("one")
    srv = start_server("--reload", "--reload-extra-file", str(tmp_path / "templates" / "*.html"), "--chdir", str(tmp_path), "reload_app2:app")
    time.sleep(1.5)
    write(conf / "a.html", "two")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "a.html modified" not in srv.log():
        time.sleep(0.2)
    assert "a.html modified" in srv.log()
    assert get(srv.url)[1] == "ok"


def test_reload_with_broken_import_serves_the_error(start_server, tmp_path):
    mod = tmp_path / "reload_app3.py"
    mod.write_text("raise RuntimeError('broken at import')\n")
    srv = start_server("--reload", "--chdir", str(tmp_path), "reload_app3:app")
    status, body = get(srv.url)
    assert status == 500 and "broken at import" in body
    time.sleep(1.2)
    write(mod, APP_V1.replace("VERSION", "fixed"))
    wait_for_body(srv.url, "fixed")


def test_reload_warns_and_runs_worker_int_then_worker_exit(start_server, tmp_path):
    # Gunicorn's reloader: a warning at boot; on a change, worker_int, then the worker
    # leaves through worker_exit.
    mod = tmp_path / "reload_hook_app.py"
    write(mod, APP_V1.replace("VERSION", "v1"))
    log = tmp_path / "hooks.txt"
    conf = hook_log_config(tmp_path / "reload_hooks.conf.py", log, "worker_int", "worker_exit")
    srv = start_server("-c", str(conf), "--reload", "--chdir", str(tmp_path), "reload_hook_app:app")
    assert get(srv.url)[1] == "v1"
    assert "[WARNING] Reloader is on. Use in development only!" in srv.log(), srv.log()
    time.sleep(1.2)
    write(mod, APP_V1.replace("VERSION", "v2"))
    wait_for_body(srv.url, "v2")
    assert wait_until(lambda: len(hook_log_lines(log)) >= 2, 5), hook_log_lines(log)
    assert [line.split()[0] for line in hook_log_lines(log)[:2]] == ["worker_int", "worker_exit"], hook_log_lines(log)
