"""Where does the next HTTP/1.1 request in a growing byte buffer end?

The buffering server worker (:mod:`web.server_worker`) reads requests on its event loop and hands one to an
application thread only when all of it has arrived. This module only frames: it finds the end of the header block
and of the body (``Content-Length`` or chunked), and refuses what no later byte can fix (oversized, ambiguous or
malformed framing). Parsing the request proper stays gunicorn's job. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_END = b"\r\n\r\n"
MAX_CHUNK_LINE = 1024
MAX_TRAILER_BYTES = 8 * 1024


@dataclass(frozen=True)
class Progress:
    """What :meth:`RequestFramer.advance` learnt: the request's end offset once complete, else what it waits for;
    or the error status to answer with."""

    end: int | None = None
    in_body: bool = False
    expects_continue: bool = False
    error: tuple[int, str] | None = None


class RequestFramer:
    """Frames one request at a time from the start of a buffer; :meth:`reset` before the next one.

    Work is incremental: a buffer that grows a byte at a time is not rescanned from the start.
    """

    def __init__(self, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.reset()

    def reset(self) -> None:
        self._searched = 0
        self._header_end = -1
        self._content_length: int | None = None
        self._chunked = False
        self._chunk_pos = 0
        self._body_bytes = 0
        self._expects_continue = False

    def advance(self, buffer: bytearray) -> Progress:
        """Look at ``buffer`` (which only ever grows while one request is framed) and say how far the request is.

        Leading empty lines before a request are dropped from ``buffer`` (RFC 9112 section 2.2 allows them).
        """
        if self._header_end < 0:
            while buffer.startswith(b"\r\n"):
                del buffer[:2]
            found = buffer.find(HEADER_END, max(0, self._searched - 3))
            if found < 0:
                self._searched = len(buffer)
                if len(buffer) > self.max_header_bytes:
                    return Progress(error=(431, "the request's header block is too large"))
                return Progress()
            self._header_end = found + len(HEADER_END)
            if self._header_end > self.max_header_bytes:
                return Progress(error=(431, "the request's header block is too large"))
            error = self._read_framing(bytes(buffer[: self._header_end]))
            if error is not None:
                return Progress(error=error)
        if self._chunked:
            return self._advance_chunked(buffer)
        end = self._header_end + (self._content_length or 0)
        if len(buffer) >= end:
            return Progress(end=end)
        return Progress(in_body=True, expects_continue=self._expects_continue)

    def _read_framing(self, head: bytes) -> tuple[int, str] | None:
        lines = head[: -len(HEADER_END)].split(b"\r\n")
        version = lines[0].rsplit(b" ", 1)[-1]
        lengths: set[bytes] = set()
        transfer_codings: list[bytes] = []
        expect = b""
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                continue  # gunicorn's parser refuses the request with the details
            name = name.strip().lower()
            if name == b"content-length":
                lengths.add(value.strip())
            elif name == b"transfer-encoding":
                transfer_codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect":
                expect = value.strip().lower()
        if transfer_codings:
            if lengths or transfer_codings[-1] != b"chunked":
                return 400, "ambiguous or unsupported request body framing"
            self._chunked = True
        elif lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                return 400, "invalid Content-Length"
            self._content_length = int(next(iter(lengths)))
            if self._content_length > self.max_body_bytes:
                return 413, f"the body must be at most {self.max_body_bytes} bytes"
        has_body = self._chunked or bool(self._content_length)
        self._expects_continue = has_body and expect == b"100-continue" and version == b"HTTP/1.1"
        self._chunk_pos = self._header_end
        return None

    def _advance_chunked(self, buffer: bytearray) -> Progress:
        waiting = Progress(in_body=True, expects_continue=self._expects_continue)
        while True:
            line_end = buffer.find(b"\r\n", self._chunk_pos)
            if line_end < 0:
                if len(buffer) - self._chunk_pos > MAX_CHUNK_LINE:
                    return Progress(error=(400, "invalid chunked body"))
                return waiting
            size_text = bytes(buffer[self._chunk_pos : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return Progress(error=(400, "invalid chunked body"))
            if size == 0:
                return self._trailers_end(buffer, line_end + 2, waiting)
            if size < 0 or self._body_bytes + size > self.max_body_bytes:
                return Progress(error=(413, f"the body must be at most {self.max_body_bytes} bytes"))
            data_end = line_end + 2 + size
            if len(buffer) < data_end + 2:
                return waiting
            if buffer[data_end : data_end + 2] != b"\r\n":
                return Progress(error=(400, "invalid chunked body"))
            self._body_bytes += size
            self._chunk_pos = data_end + 2

    @staticmethod
    def _trailers_end(buffer: bytearray, start: int, waiting: Progress) -> Progress:
        if buffer[start : start + 2] == b"\r\n":
            return Progress(end=start + 2)
        found = buffer.find(HEADER_END, start)
        if found >= 0:
            return Progress(end=found + len(HEADER_END))
        if len(buffer) - start > MAX_TRAILER_BYTES:
            return Progress(error=(431, "the request's trailers are too large"))
        return waiting
