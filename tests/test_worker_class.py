"""Worker classes Gunicorn users pass: mapped, or refused with a message that says why."""

import pytest


@pytest.mark.parametrize("wc", ["gevent", "eventlet", "tornado", "gunicorn.workers.ggevent.GeventWorker"])
def test_greenlet_workers_are_refused_with_an_explanation(run_cli, wc):
    res = run_cli("-k", wc, "testapp:app", "--check-config")
    assert res.returncode != 0
    assert "worker_class" in res.stderr and "asgi" in res.stderr, res.stderr


def test_custom_worker_class_object_is_refused(run_cli, tmp_path):
    conf = tmp_path / "wc.conf.py"
    conf.write_text("class MyWorker:\n    pass\nworker_class = MyWorker\n")
    res = run_cli("-c", str(conf), "testapp:app")
    assert res.returncode != 0
    assert "custom worker classes" in res.stderr, res.stderr


@pytest.mark.parametrize("wc", ["sync", "gthread", "asgi", "uvicorn.workers.UvicornWorker", "uvicorn_worker.UvicornWorker"])
def test_supported_worker_classes_pass_check_config(run_cli, wc):
    res = run_cli("-k", wc, "testapp:app", "--check-config")
    assert res.returncode == 0, res.stderr
