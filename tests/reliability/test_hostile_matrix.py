"""Differential hostile-input test: every case in hostile_cases.CASES is sent, as raw bytes
on a fresh connection, to Gunicorn 27 and to ferricorn (one worker each, testapp:app), and
ferricorn's answer must be the same as Gunicorn's or stricter:

* ferricorn's first status equals Gunicorn's, or ferricorn rejects (4xx/5xx, waiting, or
  closing without an answer) where Gunicorn served the request, or both reject;
* a request that reached ferricorn's app was framed exactly as Gunicorn framed it: same
  status, same body bytes (/echo) or method/path/query (/environ), and no request served
  that Gunicorn did not serve, unless ferricorn rejected it.

The rules are `hostile_cases.verdict()`; scripts/hostile_matrix.py writes the same matrix
to docs/hostile-input.md. Both servers start once per module and every case runs in
parallel, so the module takes a few seconds."""

import tempfile
from pathlib import Path

import pytest

try:  # tests/reliability as a package (with __init__.py) or as a plain directory
    from . import hostile_cases as hc
except ImportError:
    import hostile_cases as hc

CASES = {c.name: c for c in hc.CASES}


@pytest.fixture(scope="module")
def matrix():
    """{case name: (gunicorn Outcome, ferricorn Outcome)}"""
    if hc.venv_exe("gunicorn") is None:
        pytest.skip("gunicorn is not installed (pip install gunicorn==27.0.1)")
    logdir = Path(tempfile.mkdtemp(prefix="hostile-"))
    g = hc.start_gunicorn(log_path=logdir / "gunicorn.log", wait=False)
    f = hc.start_ferricorn(log_path=logdir / "ferricorn.log", wait=False)
    try:
        g.wait_ready()
        f.wait_ready()
        gr, fr = hc.run_matrix(g.port, f.port)
        assert f.proc.poll() is None, f"ferricorn died during the matrix:\n{f.log()}"
        assert g.proc.poll() is None, f"gunicorn died during the matrix:\n{g.log()}"
        yield {name: (gr[name], fr[name]) for name in CASES}
    finally:
        g.stop()
        f.stop()


def test_harness_sees_the_baseline(matrix):
    """Guards against a matrix that passes because nothing works: the control cases are
    served by both servers and the app sees what was sent."""
    for name, views in {
        "valid-get": [("environ", "GET", "/environ", "")],
        "valid-post-cl": [("echo", b"hello"), ("environ", "GET", "/environ", "follow")],
        "valid-post-chunked": [("echo", b"hello"), ("environ", "GET", "/environ", "follow")],
        "cl-too-short": [("echo", b"hel")],
    }.items():
        for label, out in zip(("gunicorn", "ferricorn"), matrix[name]):
            served = [r.view for r in out.finals if r.status < 400]
            assert served == views, f"{label} {name}: {out.detail()}"


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_case(matrix, name):
    g, f = matrix[name]
    v, why = hc.verdict(g, f)
    assert v != "DIFFERENT", (
        f"{why}\n  bytes:     {hc.escape(CASES[name].data, 400)}\n"
        f"  note:      {CASES[name].note}\n  gunicorn:  {g.detail()}\n  ferricorn: {f.detail()}"
    )
