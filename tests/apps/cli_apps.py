"""Apps for tests/test_cli.py: attribute discovery, factories and load failures."""

import json
import os


def _text(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    return _text(start_response, "application")


def app(environ, start_response):
    return _text(start_response, "app")


def create_app(*args, **kwargs):
    """A factory: the app answers with the arguments it was created with."""
    body = json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True)

    def factory_app(environ, start_response):
        return _text(start_response, body)

    return factory_app


def failing_factory():
    raise RuntimeError("factory exploded on purpose")


def env_app(environ, start_response):
    """GET /?NAME answers os.environ.get(NAME) as JSON (null when unset)."""
    name = environ.get("QUERY_STRING", "")
    return _text(start_response, json.dumps({"value": os.environ.get(name), "cwd": os.getcwd()}))


not_callable = 42
returns_none = None
