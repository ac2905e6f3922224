"""Defines only `app` (no `application`): `ferricorn cli_apponly` must find it."""


def app(environ, start_response):
    body = b"only app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
