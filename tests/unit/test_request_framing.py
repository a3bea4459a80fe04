"""Framing of one HTTP/1.1 request in a growing buffer: where it ends, and what is refused before any body is read."""

from __future__ import annotations

import pytest

from web.request_framing import Progress, RequestFramer

HEAD = b"POST /webhooks/asgardeo HTTP/1.1\r\nHost: x\r\n"


def framer() -> RequestFramer:
    return RequestFramer(max_header_bytes=1024, max_body_bytes=100)


def bytewise(data: bytes) -> list[Progress]:
    """Feed ``data`` one byte at a time (the slowest sender) and keep each answer."""
    one = framer()
    buffer = bytearray()
    seen = []
    for byte in data:
        buffer.append(byte)
        seen.append(one.advance(buffer))
    return seen


def test_a_request_without_a_body_ends_after_its_headers() -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    buffer = bytearray(request + b"GET /next")
    assert framer().advance(buffer).end == len(request)


def test_content_length_body_arrives_byte_by_byte_and_ends_exactly() -> None:
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    seen = bytewise(request + b"extra")
    ends = [p.end for p in seen]
    assert ends.index(len(request)) == len(request) - 1
    assert all(e is None for e in ends[: len(request) - 1])
    assert any(p.in_body for p in seen)


def test_chunked_body_with_extensions_and_trailers() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
    seen = bytewise(request)
    assert seen[-1].end == len(request)
    assert all(p.end is None for p in seen[:-1])
    plain = HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
    assert framer().advance(bytearray(plain + b"GET")).end == len(plain)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"Content-Length: 101\r\n", 413),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
        (b"Content-Length: -1\r\n", 400),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: gzip\r\n", 400),
    ],
)
def test_unusable_framing_is_refused_before_any_body(extra: bytes, status: int) -> None:
    progress = framer().advance(bytearray(HEAD + extra + b"\r\n"))
    assert progress.error is not None
    assert progress.error[0] == status


def test_a_chunked_body_over_the_limit_is_refused_as_soon_as_its_size_line_says_so() -> None:
    progress = framer().advance(bytearray(HEAD + b"Transfer-Encoding: chunked\r\n\r\n65\r\n"))
    assert progress.error is not None
    assert progress.error[0] == 413


def test_an_endless_header_block_is_refused() -> None:
    progress = framer().advance(bytearray(HEAD + b"X: " + b"a" * 2000))
    assert progress.error is not None
    assert progress.error[0] == 431


def test_expect_100_continue_is_reported_only_while_a_body_is_awaited() -> None:
    waiting = framer().advance(bytearray(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"))
    assert waiting.expects_continue
    assert waiting.in_body
    http10 = bytearray(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not framer().advance(http10).expects_continue


def test_leading_empty_lines_are_dropped_and_reset_frames_the_next_request() -> None:
    first = b"GET /a HTTP/1.1\r\n\r\n"
    second = b"GET /b HTTP/1.1\r\n\r\n"
    one = framer()
    buffer = bytearray(b"\r\n" + first + second)
    end = one.advance(buffer).end
    assert end is not None
    assert bytes(buffer[:end]) == first
    del buffer[:end]
    one.reset()
    assert one.advance(buffer).end == len(second)
