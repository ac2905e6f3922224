"""A small Flask app for the framework compatibility tests (flaskapp.app:app)."""

import hashlib
import os

from flask import Flask, abort, jsonify, render_template, request, stream_with_context

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024

ITEMS = [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}]


@app.get("/")
def index():
    name = request.args.get("name", "Ferricorn")
    resp = app.make_response(
        render_template("index.html", title=f"Hello {name}", items=["one", "two", "three"], unsafe="<b>&</b>")
    )
    resp.set_cookie("visited", "yes", httponly=True, samesite="Lax")
    return resp


@app.post("/form")
def form():
    out = {"fields": request.form.to_dict(flat=False), "content_type": request.mimetype, "files": {}}
    for key, f in request.files.items():
        data = f.read()
        out["files"][key] = {
            "filename": f.filename,
            "content_type": f.mimetype,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return jsonify(out)


@app.route("/api/items", methods=["GET", "POST"])
def items():
    if request.method == "POST":
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or "name" not in data:
            return jsonify(error="name required"), 400
        item = {"id": 100 + len(data["name"]), "name": data["name"], "pid": os.getpid()}
        resp = jsonify(item)
        resp.status_code = 201
        resp.headers["Location"] = f"/api/items/{item['id']}"
        return resp
    return jsonify(items=ITEMS, count=len(ITEMS))


@app.get("/stream")
def stream():
    n = request.args.get("n", 5, type=int)

    @stream_with_context
    def generate():
        # stream_with_context keeps the request context alive inside the generator.
        prefix = request.args.get("prefix", "line")
        for i in range(n):
            yield f"{prefix} {i}\n"

    return app.response_class(generate(), mimetype="text/plain")


@app.get("/missing")
def missing():
    abort(404)


@app.get("/error")
def error():
    raise RuntimeError("boom from flaskapp")


@app.get("/whoami")
def whoami():
    env = request.environ
    return jsonify(
        remote_addr=env.get("REMOTE_ADDR"),
        remote_port=env.get("REMOTE_PORT"),
        pid=os.getpid(),
        scheme=request.scheme,
        host=request.host,
        url_root=request.url_root,
        forwarded_for=request.headers.get("X-Forwarded-For"),
    )


@app.get("/download")
def download():
    # send_file goes through wsgi.file_wrapper; conditional=True adds ETag/Range support.
    from flask import send_file

    path = os.path.join(app.root_path, "templates", "index.html")
    return send_file(path, mimetype="text/html", as_attachment=True, download_name="páge.html", conditional=True)


@app.get("/stream-error")
def stream_error():
    def generate():
        yield "first\n"
        yield "second\n"
        raise RuntimeError("boom mid-stream")

    return app.response_class(generate(), mimetype="text/plain")
