"""A TCP forwarder that counts the bytes each way, to measure what a session store is sent.

    with ByteProxy(("127.0.0.1", 6379)) as proxy:        # or a unix socket path
        ... connect to 127.0.0.1:proxy.port ...
        proxy.sent, proxy.received                         # client -> server, server -> client

Used by benchmarks/sizes.py, in process and off the timed runs (a proxy costs throughput).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Union

Target = Union[str, tuple[str, int]]  # a unix socket path, or (host, port)


class ByteProxy:
    """Listens on 127.0.0.1 (an ephemeral port) and forwards each connection to ``target``.

    :param target: where to forward: ``(host, port)`` or a unix socket path.
    """

    def __init__(self, target: Target) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sent = 0
        self._received = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="byteproxy")
        self._acceptor.start()

    @property
    def sent(self) -> int:
        """Bytes the clients sent to the server since the start or the last reset()."""
        with self._lock:
            return self._sent

    @property
    def received(self) -> int:
        """Bytes the server sent back since the start or the last reset()."""
        with self._lock:
            return self._received

    def reset(self) -> None:
        with self._lock:
            self._sent = self._received = 0

    def close(self) -> None:
        self._closed = True
        self._acceptor.join(2)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> ByteProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if isinstance(self._target, str):
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            else:
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                server.connect(self._target)
            except OSError:
                client.close()
                server.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for src, dst, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    if upstream:
                        self._sent += len(chunk)
                    else:
                        self._received += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
