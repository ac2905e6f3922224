# A gunicorn.conf.py that logs every server hook it receives, in the style of the
# "debugging hooks" configs people paste into issues: one line per call,
# "<hook> <server.pid or worker.pid> <os.getpid()> <extra>", appended to $HOOK_LOG.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
graceful_timeout = 5

HOOK_LOG = os.environ["HOOK_LOG"]


def _log(name, pid, extra=""):
    with open(HOOK_LOG, "a") as f:
        f.write(f"{name} {pid} {os.getpid()} {extra}".rstrip() + "\n")
        f.flush()


def on_starting(server):
    _log("on_starting", server.pid)


def on_reload(server):
    _log("on_reload", server.pid)


def when_ready(server):
    _log("when_ready", server.pid)


def pre_fork(server, worker):
    _log("pre_fork", server.pid, f"age={worker.age} wpid={worker.pid}")


def post_fork(server, worker):
    _log("post_fork", worker.pid, f"age={worker.age}")


def post_worker_init(worker):
    _log("post_worker_init", worker.pid, f"age={worker.age}")


def worker_int(worker):
    _log("worker_int", worker.pid)


def worker_abort(worker):
    _log("worker_abort", worker.pid)


def pre_exec(server):
    _log("pre_exec", server.pid)


def child_exit(server, worker):
    _log("child_exit", worker.pid, f"age={worker.age}")


def worker_exit(server, worker):
    _log("worker_exit", worker.pid, f"age={worker.age}")


def nworkers_changed(server, new_value, old_value):
    # Gunicorn calls this from Arbiter.setup() too, before server.pid exists.
    _log("nworkers_changed", os.getpid(), f"{new_value} {old_value}")


def on_exit(server):
    _log("on_exit", server.pid)
