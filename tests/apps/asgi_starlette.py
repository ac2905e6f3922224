"""A Starlette application: routes, JSONResponse and a background task."""

import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route


async def homepage(request):
    return JSONResponse({"hello": "starlette"})


async def user(request):
    return JSONResponse({"user": request.path_params["name"], "q": request.query_params.get("q")})


async def echo(request):
    body = await request.body()
    return PlainTextResponse(body.decode()[::-1])


def write_marker(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


async def background(request):
    task = BackgroundTask(write_marker, os.environ["ASGI_BG_MARKER"], "background ran " + request.query_params["id"])
    return JSONResponse({"queued": True}, background=task)


async def file_response(request):
    """FileResponse uses the pathsend extension when the server advertises it."""
    import os

    path = os.environ["FERRICORN_TEST_FILE"]
    return FileResponse(path, media_type="application/octet-stream")


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{name}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/background", background),
        Route("/file", file_response),
    ]
)


from contextlib import asynccontextmanager  # noqa: E402


@asynccontextmanager
async def _failing_lifespan(app):
    raise RuntimeError("redis unreachable (starlette lifespan)")
    yield  # pragma: no cover


failing_app = Starlette(routes=[Route("/", homepage)], lifespan=_failing_lifespan)
