"""`ferricorn cli_pkg.wsgi:handler`: a callable inside a package module."""


def handler(environ, start_response):
    body = b"from cli_pkg.wsgi"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
