# A config that is re-read on HUP: the worker count comes from a file the deploy
# script rewrites before `kill -HUP`, and on_reload logs what it sees.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(open(os.environ["WORKERS_FILE"]).read())
HOOK_LOG = os.environ["HOOK_LOG"]


def _log(line):
    with open(HOOK_LOG, "a") as f:
        f.write(line + "\n")


def on_reload(server):
    _log(f"on_reload {os.getpid()} workers={server.cfg.workers}")
    server.log.info("Reloading: %s workers", server.cfg.workers)


def post_worker_init(worker):
    _log(f"post_worker_init {worker.pid}")
