# nworkers_changed and pre_exec logging (capacity tracking / USR2 upgrades).
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
pidfile = os.environ.get("PIDFILE")
HOOK_LOG = os.environ["HOOK_LOG"]


def _log(line):
    with open(HOOK_LOG, "a") as f:
        f.write(line + "\n")


def nworkers_changed(server, new_value, old_value):
    _log(f"nworkers_changed {new_value} {old_value}")


def pre_exec(server):
    _log(f"pre_exec {os.getpid()}")
