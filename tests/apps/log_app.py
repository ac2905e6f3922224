"""A WSGI app for the logging tests: print() to stdout/stderr, write to wsgi.errors with
the worker's pid, log through `gunicorn.error`; every other path is testapp's."""

import logging
import os
import sys

from testapp import app as _testapp


def _reply(start_response, body):
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    tag = environ.get("QUERY_STRING") or "x"
    if path == "/print":
        print(f"log-app-stdout {tag}", flush=True)
        print(f"log-app-stderr {tag}", file=sys.stderr, flush=True)
        return _reply(start_response, "printed")
    if path == "/errlog":
        environ["wsgi.errors"].write(f"log-app-errlog {tag} pid={os.getpid()}\n")
        environ["wsgi.errors"].flush()
        return _reply(start_response, str(os.getpid()))
    if path == "/pylog":
        # Application code logging through Gunicorn's loggers, as Django/Flask apps do.
        logging.getLogger("gunicorn.error").warning("app-warning %s", tag)
        logging.getLogger("gunicorn.error").debug("app-debug %s", tag)
        return _reply(start_response, "logged")
    return _testapp(environ, start_response)
