"""FastAPI and Starlette websocket endpoints for tests/test_websocket.py. When a client
goes away, the endpoint appends a line to the file named by $WS_MARKER (the tests run
several workers, so per-process memory cannot be read back)."""

import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute


def mark(text):
    path = os.environ.get("WS_MARKER")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


app = FastAPI()


@app.get("/")
async def index():
    return {"hello": "fastapi", "pid": os.getpid()}


@app.websocket("/ws/{room}")
async def ws_echo(websocket: WebSocket, room: str, name: str = "anon"):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "name": name, "echo": text, "pid": os.getpid()})
    except WebSocketDisconnect as exc:
        mark(f"fastapi disconnect {exc.code}")


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_connect(self, websocket):
        await websocket.accept()
        await websocket.send_text("welcome")

    async def on_receive(self, websocket, data):
        await websocket.send_text(data.upper())

    async def on_disconnect(self, websocket, close_code):
        mark(f"starlette disconnect {close_code}")


async def home(request):
    return PlainTextResponse("starlette home")


starlette_app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws", Echo)])
