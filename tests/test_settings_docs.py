"""docs/settings.md is generated from the settings registry; it must not go stale."""

from pathlib import Path

import ferricorn._ferricorn as core

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_doc_is_current():
    assert DOC.read_text() == core.settings_markdown(), "docs/settings.md is stale: run `make docs`"


def test_every_gunicorn_setting_is_documented():
    text = DOC.read_text()
    for name in ["bind", "workers", "limit_request_field_size", "secure_scheme_headers", "on_starting", "websocket_max_message_size", "control_socket_disable"]:
        assert f"### `{name}`" in text
