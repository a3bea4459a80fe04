"""A TCP proxy in front of RabbitMQ that closes a worker's connection once, in the moment its event loop begins.

A Celery worker starts consuming its task queues (``basic.consume`` for each, only the last one waiting for its
``consume-ok``), sets its prefetch (``basic.qos``, answered by ``qos-ok``), and begins its event loop with one short
read of the connection. This front sends a ``connection.close`` right behind that ``qos-ok``, so the close is what
that read finds: ``CONNECTION_FORCED``, as RabbitMQ sends when it closes a connection (``rabbitmqctl
close_connection``, a node shutting down). It then waits for the client's ``close-ok`` and drops the connection, as
RabbitMQ does. Every other connection, and every connection after the first close, passes unchanged.

AMQP 0-9-1 framing: after the client's 8-byte protocol header, each frame is a type octet, a channel (short), a
payload size (long), the payload and the end octet ``0xCE``; a method frame's payload starts with its class and
method ids (shorts).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Collection
from dataclasses import dataclass

from tests.chaos.tcp_proxy import TcpProxy

METHOD_FRAME = 1
FRAME_END = b"\xce"
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_QOS_OK = (60, 11)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
NO_WAIT = 0b1000  # basic.consume's bits: no-local, no-ack, exclusive, no-wait


@dataclass(frozen=True)
class Frame:
    kind: int
    channel: int
    payload: bytes

    @property
    def raw(self) -> bytes:
        return struct.pack(">BHI", self.kind, self.channel, len(self.payload)) + self.payload + FRAME_END

    @property
    def method(self) -> tuple[int, int] | None:
        if self.kind != METHOD_FRAME:
            return None
        class_id, method_id = struct.unpack_from(">HH", self.payload)
        return class_id, method_id


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> Frame:
    kind, channel, size = struct.unpack(">BHI", _read_exact(sock, 7))
    payload = _read_exact(sock, size + 1)[:-1]
    return Frame(kind, channel, payload)


def _short_string(payload: bytes, offset: int) -> tuple[str, int]:
    length = payload[offset]
    return payload[offset + 1 : offset + 1 + length].decode(), offset + 1 + length


def _awaited_consume(frame: Frame) -> str | None:
    """The queue of a ``basic.consume`` that waits for its ``consume-ok``."""
    if frame.method != BASIC_CONSUME:
        return None
    queue, offset = _short_string(frame.payload, 4 + 2)  # class and method ids, then a reserved short
    _, offset = _short_string(frame.payload, offset)  # consumer tag
    return None if frame.payload[offset] & NO_WAIT else queue


def _connection_close(reply_text: str) -> Frame:
    text = reply_text.encode()
    payload = struct.pack(">HHHB", *CONNECTION_CLOSE, 320, len(text)) + text + struct.pack(">HH", 0, 0)
    return Frame(METHOD_FRAME, 0, payload)


class ClosingAmqpFront(TcpProxy):
    """Forwards to RabbitMQ; the first connection that waits to consume one of ``queues`` is closed right behind the
    ``qos-ok`` that follows its ``consume-ok``."""

    def __init__(self, target_port: int, queues: Collection[str]) -> None:
        super().__init__(target_port)
        self.queues = frozenset(queues)
        self.closed = threading.Event()
        self._lock_state = threading.Lock()
        self._awaiting: dict[socket.socket, int] = {}  # client socket -> channel of its awaited consume
        self._consuming: set[socket.socket] = set()  # clients whose awaited consume-ok has passed
        self._closing: set[socket.socket] = set()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        if sink.getpeername() == self.target:
            self._relay_client(source, sink)
        else:
            self._relay_server(source, sink)

    def _relay_client(self, client: socket.socket, server: socket.socket) -> None:
        server.sendall(_read_exact(client, 8))  # protocol header
        while True:
            frame = _read_frame(client)
            with self._lock_state:
                if client in self._closing:
                    if frame.method == CONNECTION_CLOSE_OK:
                        return  # the pump drops both sides, as RabbitMQ does after close-ok
                    continue
                if not self.closed.is_set() and _awaited_consume(frame) in self.queues:
                    self._awaiting[client] = frame.channel
            server.sendall(frame.raw)

    def _relay_server(self, server: socket.socket, client: socket.socket) -> None:
        while True:
            frame = _read_frame(server)
            with self._lock_state:  # decided under the lock, sent outside it: a send may wait on a slow reader
                if client in self._closing:
                    continue  # after close, the client would discard anything but close-ok anyway
                close_behind = self._closes_behind(client, frame)
                if close_behind:
                    self._closing.add(client)
            client.sendall(frame.raw)
            if close_behind:
                client.sendall(_connection_close("CONNECTION_FORCED - closed as the worker began consuming").raw)
                self.closed.set()

    def _closes_behind(self, client: socket.socket, frame: Frame) -> bool:
        """Whether ``frame`` is the ``qos-ok`` after the awaited ``consume-ok`` (caller holds the lock)."""
        if frame.channel != self._awaiting.get(client):
            return False
        if frame.method == BASIC_CONSUME_OK:
            self._consuming.add(client)
        return frame.method == BASIC_QOS_OK and client in self._consuming
