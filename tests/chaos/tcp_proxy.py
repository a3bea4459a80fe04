"""A loopback TCP proxy that can be cut and restored, to make a server (Postgres) unreachable for a while.

``cut()`` closes the listening socket and resets every open connection, so clients see what a dead database
looks like: established connections break, new ones are refused at once. ``restore()`` listens again on the same
port. Nothing about the protocol is known or changed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from localrun.embedded import free_port

CHUNK = 65536


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's address (user, path and query kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{proxy.listen_host}:{proxy.port}" if userinfo else f"{proxy.listen_host}:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def forward(env: dict[str, str], names: Sequence[str], listen_host: str) -> list[TcpProxy]:
    """For each of the ``names`` set in ``env`` (store URLs), a started proxy on ``listen_host`` to its server, and
    the URL in ``env`` rewritten to go through it; the proxies, for the caller to stop."""
    proxies = []
    for name in names:
        if env.get(name):
            target = urlsplit(env[name])
            proxy = TcpProxy(target.port or 0, target.hostname or "127.0.0.1", listen_host=listen_host)
            proxy.start()
            proxies.append(proxy)
            env[name] = through(env[name], proxy)
    return proxies


class TcpProxy:
    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", listen_host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """``port``: where to listen (a free one unless given; two proxies on two addresses may share one)."""
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.connections = 0

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its port replaced by the proxy's."""
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        if url.port != self.target[1]:
            raise ValueError("the URL does not name the proxied port")
        return url.set(port=self.port).render_as_string(hide_password=False)

    def restore(self) -> None:
        """Listen (again) on :attr:`port`."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy-accept", daemon=True).start()

    start = restore

    def cut(self) -> None:
        """Refuse new connections and reset the open ones (RST, as a crashed peer or a dropped route would)."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                # SO_LINGER 0: the socket's release sends RST instead of FIN. shutdown() first: close() alone does not
                # release a socket another thread is blocked reading (each has a pump), so an idle connection, such as
                # Postgres's side of a transaction whose client was cut off, stayed open with its locks.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="tcp-proxy-pump", daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction of a connection until either side closes; a subclass may look at what passes."""
        while data := source.recv(CHUNK):
            sink.sendall(data)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            self._relay(source, sink)
        except (OSError, EOFError):
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
