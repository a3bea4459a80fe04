"""The web process as the Procfile starts it reads each request in full before the application sees it: raw HTTP
over a socket shows keep-alive, pipelining, chunked bodies, ``100 Continue``, the read timeouts and early refusals."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from localrun.embedded import free_port
from tests.webhook_payloads import encode, event, signed_headers
from tests.worker_process import ProcfileProcess, isolated_env, wait_http_ok

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    env = isolated_env(
        None,
        WEB_BIND=f"127.0.0.1:{chosen}",
        WEB_CONCURRENCY="1",
        WEB_THREADS="2",
        WEB_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        WEB_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    )
    with ProcfileProcess("web", env) as web:
        wait_http_ok(f"http://127.0.0.1:{chosen}/healthz", process=web)
        yield chosen


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_responses(sock: socket.socket, count: int, deadline: float = 5.0) -> list[bytes]:
    """Read until ``count`` status lines have arrived (bodies here are small) or the peer closes."""
    data = b""
    stop = time.monotonic() + deadline
    while data.count(b"HTTP/1.1 ") < count and time.monotonic() < stop:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def _delivery(chunked: bool = False, expect: bool = False) -> tuple[bytes, bytes]:
    raw = encode(event("userCreated"))
    headers = {**signed_headers(raw), "Host": "127.0.0.1"}
    if expect:
        headers["Expect"] = "100-continue"
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        body = b"".join(b"%x\r\n%s\r\n" % (len(raw[i : i + 50]), raw[i : i + 50]) for i in range(0, len(raw), 50))
        body += b"0\r\n\r\n"
    else:
        headers["Content-Length"] = str(len(raw))
        body = raw
    head = "POST /webhooks/asgardeo HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode(), body


def test_keep_alive_and_pipelined_requests_are_each_answered(port: int) -> None:
    get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _connect(port) as sock:
        sock.sendall(get)
        assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200")
        head, body = _delivery()
        sock.sendall(get + head + body + get)  # three requests in one write
        answers = _read_responses(sock, 3)
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 202", b"HTTP/1.1 200"]


def test_a_chunked_delivery_is_accepted(port: int) -> None:
    head, body = _delivery(chunked=True)
    with _connect(port) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 7):
            sock.sendall(body[i : i + 7])
        assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 202")


def test_expect_100_continue_is_answered_once_before_the_body(port: int) -> None:
    head, body = _delivery(expect=True)
    with _connect(port) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answers = _read_responses(sock, 1)
    assert len(answers) == 1
    assert answers[0].startswith(b"HTTP/1.1 202")


def test_headers_that_never_finish_get_408_after_the_header_timeout(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /webhooks/asgardeo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = _read_responses(sock, 1)
        waited = time.monotonic() - started
    assert answer[0].startswith(b"HTTP/1.1 408")
    assert HEADER_TIMEOUT <= waited < HEADER_TIMEOUT + 1.5


def test_a_body_that_never_finishes_gets_408_after_the_body_timeout(port: int) -> None:
    head, body = _delivery()
    with _connect(port) as sock:
        sock.sendall(head + body[:10])
        started = time.monotonic()
        answer = _read_responses(sock, 1)
        waited = time.monotonic() - started
    assert answer[0].startswith(b"HTTP/1.1 408")
    assert BODY_TIMEOUT - 0.5 <= waited < BODY_TIMEOUT + 1.5


def test_a_silent_connection_is_closed_after_the_header_timeout(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_an_oversized_body_is_refused_before_it_is_sent(port: int) -> None:
    head = b"POST /webhooks/asgardeo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n"
    with _connect(port) as sock:
        sock.sendall(head)
        answer = _read_responses(sock, 1)
    assert answer[0].startswith(b"HTTP/1.1 413")


def test_a_malformed_request_still_gets_gunicorns_400(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        answer = _read_responses(sock, 1)
    assert answer[0].startswith(b"HTTP/1.1 400")
