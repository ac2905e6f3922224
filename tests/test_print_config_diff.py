"""Differential test of `--print-config`: for the same command line, environment and config
file, `ferricorn --print-config ...` and `gunicorn --print-config ...` (27.0.1) must both
exit 0 and print the same resolved value for every setting both of them know.

Gunicorn's format (Config.__str__): one `name = value` line per setting, sorted by name,
names padded to the longest one; callables are shown as `<qualname()>`, every other value
with str() (lists and dicts as their Python repr)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import HERE, base_env, ferricorn_cmd

CONFIGS = HERE / "configs"
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable))

pytestmark = pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed next to the test interpreter")

# Settings whose printed value may legitimately differ between the two servers.
# (None so far: Gunicorn prints hooks as `<qualname()>`, not with addresses, so they are
# comparable; worker_class, logger_class, proc_name and default_proc_name print the
# configured text in both.)
EXCLUDED = {
    # name: "reason",
}

LINE = re.compile(r"^([a-z][a-z0-9_]*) +=(?: (.*))?$")


def run_print_config(server, args, env, cwd):
    cmd = ferricorn_cmd() if server == "ferricorn" else [GUNICORN]
    res = subprocess.run(cmd + ["--print-config", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{server} --print-config {args} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def parse(stdout):
    values = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            values[m.group(1)] = m.group(2) or ""
    return values


def make_env(tmp_path, extra):
    env = base_env()
    env["PYTHONPATH"] = os.pathsep.join([str(CONFIGS), env["PYTHONPATH"]])
    env["HOME"] = str(tmp_path / "home")
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    env.pop("SENDFILE", None)
    for k, v in (extra or {}).items():
        env[k] = v.format(tmp=tmp_path, configs=CONFIGS)
    return env


def both(tmp_path, args, env=None, files=None):
    """Runs both servers with the same arguments, environment and working directory
    (`files` are written into it first); returns ({name: value} gunicorn, ferricorn, results)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (cwd / name).write_text(text.format(tmp=tmp_path, configs=CONFIGS))
    args = [a.format(tmp=tmp_path, configs=CONFIGS) for a in args]
    env = make_env(tmp_path, env)
    g = run_print_config("gunicorn", args, env, cwd)
    f = run_print_config("ferricorn", args, env, cwd)
    return parse(g.stdout), parse(f.stdout), (g, f)


def assert_same(gv, fv, res):
    assert gv, f"could not parse Gunicorn's output:\n{res[0].stdout}\n{res[0].stderr}"
    assert fv, f"could not parse ferricorn's output:\n{res[1].stdout}\n{res[1].stderr}"
    diffs = {
        name: (gv[name], fv[name])
        for name in sorted(set(gv) & set(fv))
        if name not in EXCLUDED and gv[name] != fv[name]
    }
    msg = "\n".join(f"  {n}:\n    gunicorn:  {g!r}\n    ferricorn: {f!r}" for n, (g, f) in diffs.items())
    assert not diffs, f"{len(diffs)} settings resolve differently:\n{msg}"


CLI_SET = [
    "-w", "3", "-b", "127.0.0.1:9000", "-b", "unix:/tmp/x.sock", "--threads", "4", "-t", "60", "--keep-alive", "5",
    "--max-requests", "1000", "--max-requests-jitter", "50", "--log-level", "debug", "--access-logfile", "-",
    "--umask", "0o22", "--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1",
]

MORE_CLI = [
    "-k", "gthread", "--worker-connections", "50", "--backlog", "100", "--graceful-timeout", "10",
    "--limit-request-line", "8000", "--limit-request-fields", "50", "--limit-request-field_size", "4096",
    "--preload", "--reuse-port", "--no-sendfile", "--chdir", "{configs}", "--pythonpath", "/srv/a,/srv/b",
    "-n", "myapp", "-p", "{tmp}/app.pid", "--worker-tmp-dir", "/dev/shm", "--error-logfile", "-",
    "--access-logformat", '%(h)s "%(r)s" %(s)s %(L)s', "--proxy-protocol", "--proxy-allow-from", "*",
    "--header-map", "dangerous", "--statsd-host", "localhost:9125", "--statsd-prefix", "app",
    "--dogstatsd-tags", "env:test", "--log-syslog-to", "udp://logs:514", "--forwarder-headers", "SCRIPT_NAME",
    "--root-path", "/api", "--http-protocols", "h1", "--reload-engine", "poll", "--ciphers", "ECDHE+AESGCM",
    "-e", "A=1", "-e", "B=x=y", "--max-requests", "10", "--timeout", "0", "--capture-output",
    "--umask", "022", "--log-level", "warning",
]

SCENARIOS = {
    "defaults": dict(args=["conf_app:app"]),
    "cli": dict(args=CLI_SET + ["conf_app:app"]),
    "more_cli": dict(args=MORE_CLI + ["conf_app:app"]),
    "config_file": dict(args=["-c", "{configs}/many_settings.py", "conf_app:app"], env={"ERROR_LOG": "{tmp}/error.log"}),
    "gunicorn_cmd_args": dict(
        args=["conf_app:app"],
        env={"GUNICORN_CMD_ARGS": "--bind 127.0.0.1:7000 --workers 2 --threads 3 --timeout 90 --access-logfile - -n from-env -e A=1 -e B=2"},
    ),
    "web_concurrency_and_port": dict(args=["conf_app:app"], env={"WEB_CONCURRENCY": "4", "PORT": "5000"}),
    "env_derived_defaults": dict(args=["conf_app:app"], env={"FORWARDED_ALLOW_IPS": "10.1.0.0/16,192.168.0.1", "SENDFILE": "0"}),
    "discovered_gunicorn_conf_py": dict(
        args=["conf_app:app"],
        files={"gunicorn.conf.py": "bind = '0.0.0.0:8080'\nworkers = 3\nraw_env = ['X=1']\nkeepalive = 30\n"},
    ),
    "precedence_file_env_cli": dict(
        args=["-c", "layered.py", "-w", "7", "conf_app:app"],
        env={"GUNICORN_CMD_ARGS": "-w 5 --threads 4 -b 127.0.0.1:6000", "WEB_CONCURRENCY": "9", "PORT": "5555"},
        files={"layered.py": "workers = 3\nthreads = 2\ntimeout = 77\nbind = ['127.0.0.1:5000']\n"},
    ),
    "wsgi_app_in_config": dict(args=["-c", "{configs}/wsgi_app_conf.py"]),
    # argparse: a repeated single-value option is not an error, the last one wins (a
    # Dockerfile CMD with "$@" appended, a wrapper script adding its own --timeout...).
    "repeated_options": dict(args=["-w", "2", "--timeout", "30", "-w", "5", "--timeout", "120", "-b", "127.0.0.1:1", "conf_app:app"]),
    # Gunicorn lower-cases the level when it sets up logging (LOG_LEVEL=DEBUG in a
    # container's environment is common).
    "uppercase_log_level": dict(args=["--log-level", "DEBUG", "conf_app:app"]),
    "uvicorn_worker": dict(args=["-k", "uvicorn.workers.UvicornWorker", "conf_app:asgi_app"]),
    "asgi_worker": dict(args=["-k", "asgi", "--asgi-loop", "asyncio", "--asgi-lifespan", "off", "conf_app:asgi_app"]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_print_config_matches_gunicorn(tmp_path, scenario):
    s = SCENARIOS[scenario]
    gv, fv, res = both(tmp_path, s["args"], s.get("env"), s.get("files"))
    assert_same(gv, fv, res)


# Every real-world config in tests/configs, with the environment it reads.
CONFIG_ENV = {
    "PORT": "8123",
    "WEB_CONCURRENCY": "2",
    "HOOK_LOG": "{tmp}/hooks.log",
    "CLEANUP_DIR": "{tmp}",
    "PROMETHEUS_MULTIPROC_DIR": "{tmp}/prom",
    "WORKERS_FILE": "{tmp}/workers",
    "ERROR_LOG": "{tmp}/error.log",
    "PROJECT_DIR": "{tmp}",
    "EXTRA_PYTHONPATH": "{tmp}/libs",
    "APP_INITIALIZED": "{tmp}/ready",
}
REAL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.py") if p.name != "conf_app.py")


@pytest.mark.parametrize("config", REAL_CONFIGS)
def test_print_config_of_real_configs_matches_gunicorn(tmp_path, config):
    (tmp_path / "workers").write_text("2")
    gv, fv, res = both(tmp_path, ["-c", f"{{configs}}/{config}", "conf_app:app"], CONFIG_ENV)
    assert_same(gv, fv, res)


def test_print_config_goes_to_stdout_with_capture_output(tmp_path):
    """capture_output redirects the running server's stdout/stderr into the error log;
    --print-config still prints on stdout (Gunicorn prints before any logging is set up)."""
    elog = tmp_path / "error.log"
    gv, fv, (g, f) = both(tmp_path, ["--capture-output", "--error-logfile", str(elog), "-w", "3", "conf_app:app"])
    assert gv["workers"] == "3" and gv["capture_output"] == "True"
    assert fv.get("workers") == "3" and fv.get("capture_output") == "True", f"ferricorn's stdout:\n{f.stdout}\nstderr:\n{f.stderr}"


def test_print_config_lists_every_gunicorn_setting(tmp_path):
    gv, fv, _ = both(tmp_path, ["conf_app:app"])
    assert len(gv) >= 120
    missing = sorted(set(gv) - set(fv))
    assert not missing, f"settings Gunicorn prints and ferricorn does not: {missing}"


def test_print_config_format(tmp_path):
    """Same layout as Gunicorn: only `name = value` lines, sorted, names padded to the
    longest name, a single space after `=` (Gunicorn: "{k:{kmax}} = {v}")."""
    _, _, (g, f) = both(tmp_path, ["conf_app:app"])
    for res in (g, f):
        lines = res.stdout.splitlines()
        names = [l.split(" ", 1)[0] for l in lines]
        assert names == sorted(names), res.args
        kmax = max(len(n) for n in names)
        for line in lines:
            name, _, value = line.partition(" = ")
            assert line == f"{name.strip():{kmax}} = {value}", (res.args[0], line)
