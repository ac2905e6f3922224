"""Grows by 40 MiB per /grow request, to trigger --max-worker-memory."""

import os

hog = []


def app(environ, start_response):
    if environ["PATH_INFO"] == "/grow":
        hog.append(bytearray(40 << 20))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
