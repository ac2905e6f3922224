"""A FastAPI application for the ASGI end-to-end tests."""

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

STREAMS = {}


class Database:
    def __init__(self):
        self.items = {1: "apple", 2: "banana"}
        self.pid = os.getpid()


@asynccontextmanager
async def lifespan(app):
    app.state.db = Database()
    app.state.started = True
    yield {"resource": "lifespan-resource"}
    marker = os.environ.get("ASGI_SHUTDOWN_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"fastapi shutdown {os.getpid()}\n")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


def get_db(request: Request) -> Database:
    return request.app.state.db


class Paginator:
    def __init__(self, skip: int = 0, limit: int = 10):
        self.skip = skip
        self.limit = limit


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None, db: Database = Depends(get_db)):
    if item_id not in db.items:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "name": db.items[item_id], "q": q}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"created": item.model_dump(), "total": item.price * 2}


@app.get("/paged")
async def paged(p: Paginator = Depends()):
    return {"skip": p.skip, "limit": p.limit}


@app.get("/lifespan")
async def lifespan_info(request: Request):
    return {
        "resource": request.state.resource,
        "started": request.app.state.started,
        "db_pid": request.app.state.db.pid,
        "pid": os.getpid(),
    }


@app.get("/client")
async def client(request: Request):
    return {"host": request.client.host, "port": request.client.port, "pid": os.getpid()}


@app.get("/stream")
async def stream(n: int = 5, delay: float = 0.0):
    async def gen():
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield f"line {i}\n"

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/endless")
async def endless(key: str):
    """Streams until the client goes away; STREAMS[key] says whether the generator ended."""
    STREAMS[key] = {"chunks": 0, "closed": False}

    async def gen():
        try:
            while True:
                STREAMS[key]["chunks"] += 1
                yield b"x" * 1024
                await asyncio.sleep(0.02)
        finally:
            STREAMS[key]["closed"] = True

    return StreamingResponse(gen(), media_type="application/octet-stream")


@app.get("/endless-status")
async def endless_status(key: str):
    return STREAMS.get(key, {})


@app.get("/file")
async def file(path: str):
    return FileResponse(path, filename="download.bin")
