# prometheus_client's multiprocess mode, as its README documents it for Gunicorn: the
# metrics directory is wiped at start in on_starting, and child_exit marks dead workers
# (mark_process_dead removes their live-gauge files). Written without prometheus_client
# so that the test does not need it installed.
import glob
import os
import shutil

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 2


def on_starting(server):
    d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "on_starting"), "w") as f:
        f.write(str(os.getpid()))


def child_exit(server, worker):
    # multiprocess.mark_process_dead(worker.pid)
    d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for f in glob.glob(os.path.join(d, f"gauge_live*_{worker.pid}.db")):
        os.remove(f)
    with open(os.path.join(d, f"dead_{worker.pid}"), "w") as f:
        f.write(str(os.getpid()))
