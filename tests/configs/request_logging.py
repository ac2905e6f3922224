# Per-request logging and timing hooks, as posted in answers about "how to log each
# request with gunicorn": pre_request stamps the request, post_request logs the status
# and the duration.
import os
import time

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 1
loglevel = "info"


def pre_request(worker, req):
    req.start_time = time.time()
    worker.log.info("%s %s", req.method, req.path)


def post_request(worker, req, environ, resp):
    duration = time.time() - req.start_time
    worker.log.info("%s %s %s %s in %.3fs", req.method, req.path, resp.status, resp.status_code, duration)
