"""Open live streams are capped per process, so browsers cannot take every web thread from the webhook intake."""

from __future__ import annotations

from flask import Flask


def test_streams_past_the_cap_get_503_until_one_closes(app: Flask, admin_headers: dict[str, str]) -> None:
    app.config["SETTINGS"] = app.config["SETTINGS"].model_copy(update={"live_stream_max_per_process": 1})
    client = app.test_client()
    first = client.get("/events/users", headers=admin_headers, buffered=False)
    assert first.status_code == 200
    busy = client.get("/events/users", headers=admin_headers, buffered=False)
    assert busy.status_code == 503
    assert busy.json["error"] == "stream_busy"
    assert busy.headers["Retry-After"] == "5"
    first.close()
    again = client.get("/events/users", headers=admin_headers, buffered=False)
    assert again.status_code == 200
    again.close()


def test_refused_callers_do_not_take_a_slot(app: Flask, admin_headers: dict[str, str]) -> None:
    app.config["SETTINGS"] = app.config["SETTINGS"].model_copy(update={"live_stream_max_per_process": 1})
    client = app.test_client()
    assert client.get("/events/users").status_code == 401
    assert client.get("/events/users?last_event_id=x", headers=admin_headers).status_code == 400
    stream = client.get("/events/users", headers=admin_headers, buffered=False)
    assert stream.status_code == 200
    stream.close()
