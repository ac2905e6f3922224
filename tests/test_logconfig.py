"""Python logging integration: the `gunicorn.error`/`gunicorn.access` loggers for app code,
and logconfig_dict / --log-config-json / --log-config routing every ferricorn line."""

import json
import signal
import sys
import time
import urllib.request

import pytest

from conftest import wait_until


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def started(srv, timeout=15):
    """For servers whose log lines go elsewhere: wait until the app answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, srv.log()
        try:
            fetch(srv.url + "/")
            return srv
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not answer")


def records(path):
    """The records of a file written with the `tabs` formatter."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        level, logger, pid, msg = line.split("\t", 3)
        out.append({"level": level, "logger": logger, "pid": int(pid), "msg": msg})
    return out


def test_app_code_logs_through_gunicorn_error(start_server):
    srv = start_server("log_app:app")
    assert fetch(srv.url + "/pylog?t1") == b"logged"
    srv.wait_for("app-warning t1")
    line = next(l for l in srv.log().splitlines() if "app-warning t1" in l)
    # Gunicorn's error-log format, from the worker's pid.
    assert " [WARNING] app-warning t1" in line and line.startswith("[")
    assert "app-debug t1" not in srv.log()


def test_app_debug_lines_follow_loglevel(start_server):
    srv = start_server("--log-level", "debug", "log_app:app")
    fetch(srv.url + "/pylog?t2")
    srv.wait_for("[DEBUG] app-debug t2")


DICT_CONF = '''
logconfig_dict = {{
    "formatters": {{"tabs": {{"format": "%(levelname)s\\t%(name)s\\t%(process)d\\t%(message)s"}}}},
    "handlers": {{
        "err": {{"class": "logging.FileHandler", "filename": {err!r}, "formatter": "tabs"}},
        "acc": {{"class": "logging.FileHandler", "filename": {acc!r}, "formatter": "tabs"}},
    }},
    "root": {{"level": "INFO", "handlers": ["err"]}},
    "loggers": {{
        "gunicorn.error": {{"level": "INFO", "handlers": ["err"], "propagate": False}},
        "gunicorn.access": {{"level": "INFO", "handlers": ["acc"], "propagate": False}},
    }},
}}
'''


def test_logconfig_dict_routes_error_and_access_lines(start_server, tmp_path):
    err, acc = tmp_path / "error.log", tmp_path / "access.log"
    conf = tmp_path / "conf.py"
    conf.write_text(DICT_CONF.format(err=str(err), acc=str(acc)))
    # No --access-logfile: a logging configuration turns the access log on, as in Gunicorn.
    srv = started(start_server("-c", str(conf), "log_app:app", wait=False))
    fetch(srv.url + "/pylog?t3")
    assert wait_until(lambda: any("app-warning t3" in l["msg"] for l in records(err)), 10), err.read_text()
    assert wait_until(lambda: any('"GET /pylog?t3 HTTP/1.1" 200' in l["msg"] for l in records(acc)), 10)
    msgs = [l["msg"] for l in records(err)]
    assert any(m.startswith("Listening at: http://127.0.0.1:") for m in msgs), msgs
    assert any(m.startswith("Booting worker with pid: ") for m in msgs), msgs
    assert {l["logger"] for l in records(err)} == {"gunicorn.error"}
    srv.stop(signal.SIGTERM)
    assert "Shutting down: Master" in [l["msg"] for l in records(err)]
    # Nothing went to the default destinations.
    assert "Listening at" not in srv.log()


def test_logconfig_json_file(start_server, tmp_path):
    err = tmp_path / "error.log"
    cfg = {
        "formatters": {"plain": {"format": "%(levelname)s|%(name)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(err), "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "loggers": {
            "gunicorn.error": {"level": "WARNING", "handlers": ["file"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
        },
    }
    path = tmp_path / "log.json"
    path.write_text(json.dumps(cfg))
    srv = started(start_server("--log-config-json", str(path), "log_app:app", wait=False))
    fetch(srv.url + "/pylog?t4")
    assert wait_until(lambda: err.exists() and "WARNING|gunicorn.error|app-warning t4" in err.read_text(), 10)
    assert wait_until(lambda: "INFO|gunicorn.access|127.0.0.1 - - [" in err.read_text(), 10)
    # The logger's WARNING level filters ferricorn's own INFO lines.
    assert "Listening at" not in err.read_text()


def test_logconfig_ini_file(start_server, tmp_path):
    out = tmp_path / "ini.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(f"""
[loggers]
keys=root, gunicorn.error, gunicorn.access

[handlers]
keys=file

[formatters]
keys=generic

[logger_root]
level=INFO
handlers=file

[logger_gunicorn.error]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.error

[logger_gunicorn.access]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.access

[handler_file]
class=FileHandler
formatter=generic
args=({str(out)!r}, 'a')

[formatter_generic]
format=INI %(name)s %(message)s
""")
    srv = started(start_server("--log-config", str(ini), "log_app:app", wait=False))
    fetch(srv.url + "/")
    assert wait_until(lambda: out.exists() and "INI gunicorn.error Booting worker with pid:" in out.read_text(), 10)
    assert wait_until(lambda: 'INI gunicorn.access 127.0.0.1 - - [' in out.read_text(), 10)


@pytest.mark.parametrize(
    "args, conf, setting",
    [
        (["--log-config", "/no/such/logging.ini"], None, "logconfig"),
        (["--log-config-json", "/no/such/log.json"], None, "logconfig_json"),
        ([], "logconfig_dict = {'handlers': {'h': {'class': 'no.such.Handler'}}}\n", "logconfig_dict"),
        (["--logger-class", "myapp.logging.CustomLogger"], None, "logger_class"),
    ],
)
def test_bad_logging_settings_fail_at_start_up(run_cli, tmp_path, args, conf, setting):
    extra = []
    if conf:
        path = tmp_path / "bad_log_conf.py"
        path.write_text(conf)
        extra = ["-c", str(path)]
    res = run_cli(*extra, *args, "--check-config", "testapp:app")
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: Invalid value for {setting}"), res.stderr


ARGS_CONF = '''
import logging

class Args(logging.Filter):
    # JSON access-log recipes read the atoms from record.args, as Gunicorn passes them.
    def filter(self, record):
        a = record.args
        record.atoms = f"U={{a['U']}} s={{a['s']}} ua={{a['{{User-Agent}}i']}} miss={{a['{{nope}}i']}}"
        return record.msg == {fmt!r}

access_log_format = {fmt!r}
logconfig_dict = {{
    "filters": {{"args": {{"()": Args}}}},
    "formatters": {{"atoms": {{"format": "%(atoms)s|%(message)s"}}}},
    "handlers": {{"acc": {{"class": "logging.FileHandler", "filename": {acc!r}, "formatter": "atoms",
                          "filters": ["args"]}}}},
    "root": {{"level": "INFO", "handlers": []}},
    "loggers": {{"gunicorn.access": {{"level": "INFO", "handlers": ["acc"], "propagate": False}}}},
}}
'''


def test_access_records_carry_the_format_and_the_atoms(start_server, tmp_path):
    acc = tmp_path / "access.log"
    conf = tmp_path / "conf.py"
    conf.write_text(ARGS_CONF.format(acc=str(acc), fmt='%(h)s "%(r)s" %(s)s %({user-agent}i)s'))
    srv = started(start_server("-c", str(conf), "log_app:app", wait=False))
    fetch(srv.url + "/pylog?t9")
    assert wait_until(lambda: acc.exists() and "t9" in acc.read_text(), 10)
    line = next(l for l in acc.read_text().splitlines() if "t9" in l)
    ua = "Python-urllib/%d.%d" % sys.version_info[:2]
    assert line == f'U=/pylog s=200 ua={ua} miss=-|127.0.0.1 "GET /pylog?t9 HTTP/1.1" 200 {ua}', line


def test_builtin_logger_classes_are_accepted(run_cli):
    for cls in ("gunicorn.glogging.Logger", "gunicorn.instrument.statsd.Statsd"):
        res = run_cli("--logger-class", cls, "--check-config", "testapp:app")
        assert res.returncode == 0, res.stderr


def test_percent_in_messages_is_not_formatted(start_server, tmp_path):
    err, acc = tmp_path / "error.log", tmp_path / "access.log"
    conf = tmp_path / "conf.py"
    conf.write_text(DICT_CONF.format(err=str(err), acc=str(acc)))
    srv = started(start_server("-c", str(conf), "log_app:app", wait=False))
    fetch(srv.url + "/p%25s%25d?x=%25s")
    assert wait_until(lambda: any("/p%25s%25d?x=%25s" in l["msg"] for l in records(acc)), 10), acc.read_text()
    time.sleep(0.1)
