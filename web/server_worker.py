"""Gunicorn's threaded worker, changed so that a request reaches an application thread only once it has fully arrived.

Gunicorn's ``gthread`` worker gives a connection to a thread as soon as its first bytes arrive; the thread then
blocks reading the headers and the body. A client that sends ``Content-Length: 65536`` and then a byte every few
seconds holds that thread for as long as it likes, and a hundred such clients hold them all: no credentials needed,
and the signed deliveries behind them time out. Here, each worker's event loop (the thread that already accepts
connections and watches idle keep-alive ones) also reads requests, without blocking, into a per-connection buffer:

- a request goes to the thread pool only when its headers and whole body are in memory (framed by
  :mod:`web.request_framing`), and gunicorn's own parser then reads it from that buffer;
- the headers must arrive within ``WEB_HEADER_TIMEOUT_SECONDS`` of a new connection (or of the first byte of a
  request on a kept-alive one), the body within ``WEB_BODY_TIMEOUT_SECONDS`` after the headers; otherwise the
  client gets ``408`` and the connection is closed (silently when not a byte of a request came);
- a body larger than the application would accept (:attr:`models.settings.Settings.max_request_body_bytes`) gets
  ``413`` before it is read, and oversized or ambiguous framing gets ``431`` or ``400``;
- ``Expect: 100-continue`` is answered by the loop, since the application will not read the body itself.

What stays as in ``gthread``: threads run the application and write the responses; idle keep-alive connections
wait in the loop for ``keepalive`` seconds; at most ``worker_connections`` connections per process. Memory for
buffered requests is bounded by ``worker_connections`` times the body limit, and only by clients that really send
that many bytes. TLS and the PROXY protocol are not supported (the service runs behind a terminating proxy or load
balancer), and the worker refuses to start with them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import selectors
import socket
import sys
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from models.settings import get_settings
from web.request_framing import RequestFramer

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
SWEEP_EVERY_SECONDS = 0.25
SWITCH_INTERVAL_SECONDS = 0.001
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class BufferedConn(TConn):  # type: ignore[misc]  # gunicorn ships no types
    """A client connection with the bytes read so far and the deadline of what it is waiting for."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, framer: RequestFramer) -> None:
        super().__init__(cfg, sock, client, server)
        self.framer = framer
        self.buffer = bytearray()
        self.request = b""
        self.deadline = 0.0
        self.idle = False
        self.in_body = False


class BufferingThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no types
    """``gthread`` with requests read by the event loop; see the module docstring."""

    def init_process(self) -> None:
        if self.cfg.is_ssl or self.cfg.proxy_protocol != "off" or getattr(self.cfg, "protocol", "http") != "http":
            raise RuntimeError("the buffering worker serves plain HTTP only: terminate TLS and PROXY in front of it")
        settings = get_settings()
        self.header_timeout = settings.web_header_timeout_seconds
        self.body_timeout = settings.web_body_timeout_seconds
        self.max_body_bytes = settings.max_request_body_bytes
        self.reading: set[BufferedConn] = set()
        self._next_sweep = 0.0
        # This loop now reads every request, so every request waits for the loop to get the GIL back after its
        # recv; under Python's default 5 ms switch interval it queues behind the application threads. Measured on
        # the shared 2-core machine (docs/benchmarks.md): at 5 ms the intake ran below gthread's rate in all three
        # paired runs, at 1 ms above it in two of four (median slightly above). The machine's noise is as large.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        super().init_process()

    # --- the event loop's side ---------------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        framer = RequestFramer(MAX_HEADER_BYTES, self.max_body_bytes)
        conn = BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), framer)
        conn.deadline = time.monotonic() + self.header_timeout
        self._watch(conn)

    def _watch(self, conn: BufferedConn) -> None:
        conn.sock.setblocking(False)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _unwatch(self, conn: BufferedConn) -> None:
        self.reading.discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):  # not registered (any more)
            self.poller.unregister(conn.sock)

    def _drop(self, conn: BufferedConn) -> None:
        self._unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def _on_readable(self, conn: BufferedConn, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        if conn.idle:
            # The first byte of the next request on a kept-alive connection: its headers' clock starts now.
            conn.idle = False
            conn.deadline = time.monotonic() + self.header_timeout
        conn.buffer += data
        self._advance(conn)

    def _advance(self, conn: BufferedConn) -> None:
        progress = conn.framer.advance(conn.buffer)
        if progress.error is not None:
            self._refuse(conn, *progress.error)
            return
        if progress.end is None:
            if progress.in_body and not conn.in_body:
                conn.in_body = True
                conn.deadline = time.monotonic() + self.body_timeout
                if progress.expects_continue:
                    self._send_quietly(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._unwatch(conn)
        conn.request = bytes(conn.buffer[: progress.end])
        del conn.buffer[: progress.end]
        conn.framer.reset()
        conn.in_body = False
        self.enqueue_req(conn)

    def _refuse(self, conn: BufferedConn, status: int, detail: str) -> None:
        """Answer from the loop (the application never saw the request) and close the connection."""
        log.warning("request refused before the application", extra={"status": status, "error": detail})
        body = json.dumps({"error": _REASONS[status].lower().replace(" ", "_"), "detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self._send_quietly(conn, head + body)
        self._drop(conn)

    @staticmethod
    def _send_quietly(conn: BufferedConn, data: bytes) -> None:
        """Best effort on a non-blocking socket: a short answer fits the send buffer; a gone client is no error."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    def murder_keepalived(self) -> None:
        """Called by gunicorn's loop after every wake-up: enforce the read deadlines (a few times a second)."""
        now = time.monotonic()
        if now < self._next_sweep and self.alive:
            return
        self._next_sweep = now + SWEEP_EVERY_SECONDS
        for conn in list(self.reading):
            if not self.alive:
                if conn.buffer:
                    self._refuse(conn, 503, "the server is restarting; send the request again")
                else:
                    self._drop(conn)
            elif conn.deadline <= now:
                if not conn.buffer:
                    # Nothing of a request came (an idle keep-alive or a browser's preconnect): end it quietly, as
                    # an unasked-for 408 could be read as the answer to a request sent at this very moment.
                    self._drop(conn)
                else:
                    phase = "body" if conn.in_body else "headers"
                    self._refuse(conn, 408, f"the request's {phase} did not arrive in time")

    def finish_request(self, conn: BufferedConn, fs: Future[bool]) -> None:
        """Back from a thread: keep the connection for its next request, or close it."""
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        conn.request = b""
        if not (keep and self.alive):
            self.nr_conns -= 1
            conn.close()
            return
        if conn.buffer:
            # The client already sent (part of) its next request.
            conn.idle = False
            conn.deadline = time.monotonic() + self.header_timeout
            self._watch(conn)
            self._advance(conn)
        else:
            conn.idle = True
            conn.deadline = time.monotonic() + self.cfg.keepalive
            self._watch(conn)

    # --- an application thread's side ------------------------------------------------------------------------

    def handle(self, conn: BufferedConn) -> bool:
        """Run the application on a request that is already in memory; True to keep the connection."""
        req = None
        try:
            conn.sock.setblocking(True)
            req = next(http.get_parser(self.cfg, [conn.request], conn.client))
            # The loop already said "100 Continue" when the client asked for it; gunicorn must not say it again.
            req._expected_100_continue = False
            return bool(self.handle_request(req, conn))
        except (http.errors.NoMoreData, StopIteration):
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
            return False
