# worker_exit doing per-worker cleanup on shutdown (flushing buffers, closing
# connections, removing per-process files), writing one marker file per worker.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 2
graceful_timeout = 10
CLEANUP_DIR = os.environ["CLEANUP_DIR"]


def worker_exit(server, worker):
    import conf_app

    with open(os.path.join(CLEANUP_DIR, f"worker-{worker.pid}.exited"), "w") as f:
        f.write(f"{worker.pid} {os.getpid()} {conf_app.STATE['imported_in']}\n")


def post_worker_init(worker):
    open(os.path.join(CLEANUP_DIR, f"worker-{worker.pid}.ready"), "w").close()
