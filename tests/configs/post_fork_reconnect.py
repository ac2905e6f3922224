# The "fork-safety" gunicorn.conf.py: the app is preloaded in the master to share memory,
# so each worker must reseed its random generator and open its own database connection
# (SQLAlchemy's `engine.dispose()`, psycopg pools, Redis clients...) after the fork.
import os
import random

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
preload_app = True


def post_fork(server, worker):
    random.seed()
    import conf_app  # already imported by the master (preload_app)

    conf_app.connect()
    server.log.info("Worker spawned (pid: %s), reconnected", worker.pid)
