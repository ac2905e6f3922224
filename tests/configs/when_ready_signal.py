# The readiness signal of heroku-buildpack-nginx's gunicorn config: nginx starts only
# once /tmp/app-initialized exists.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 2


def when_ready(server):
    open(os.environ.get("APP_INITIALIZED", "/tmp/app-initialized"), "w").close()
