"""What testtime's two HTTP services share: a bound listening socket, its URL, the uvicorn
server they run, and :class:`ThreadedServer`, the server on a daemon thread (tests, notebooks,
benchmarks). ``testtime serve prm`` (:mod:`testtime.scoring.service.server`) and ``testtime
serve tts`` (:mod:`testtime.api.server`) build on it."""

from __future__ import annotations

import socket
import threading
from typing import Any, Self

#: Connections that queue on the listening socket until uvicorn accepts them (client bursts).
BACKLOG = 2048
#: How often a starting server is polled.
_POLL_S = 0.01


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(BACKLOG)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: Any) -> Any:
    """A quiet uvicorn server for ``app`` (run it on sockets bound by :func:`bind_socket`)."""
    from testtime.scoring.service.protocol import require

    uvicorn = require("uvicorn")
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         lifespan="on", ws="none"))


class ThreadedServer:
    """``app`` served on ``host:port`` from a daemon thread; a context manager. Returns once
    the server has started (its lifespan startup, e.g. loading models, done), or raises
    ``RuntimeError`` naming ``what`` when the thread dies or ``start_timeout_s`` passes."""

    def __init__(self, app: Any, host: str, port: int, *, what: str,
                 start_timeout_s: float, stop_timeout_s: float) -> None:
        self.app = app
        self._stop_timeout_s = stop_timeout_s
        self._sock = bind_socket(host, port)
        self.url = url_of(self._sock)
        self._server = uvicorn_server(app)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > start_timeout_s:
                self.stop()
                raise RuntimeError(f"{what} on {self.url} did not start")
            threading.Event().wait(_POLL_S)
            waited += _POLL_S

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self._stop_timeout_s)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
