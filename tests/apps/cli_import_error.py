"""Importing this module raises."""

RESULT = 1 / 0


def app(environ, start_response):  # pragma: no cover - never reached
    start_response("200 OK", [])
    return [b""]
