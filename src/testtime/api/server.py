"""Run the test-time scaling app: in the foreground (``testtime serve tts``) or from a
daemon thread (:class:`BackgroundService`: tests, notebooks, benchmarks).

The engine (policy, scorer, grader) is built in the server's event loop at startup, so the
service answers only once its models are loaded; ``on_ready`` / ``BackgroundService``
return then.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from testtime.api.app import create_app
from testtime.api.options import ServiceConfig
from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.scoring.service.protocol import require
from testtime.scoring.service.server import bind_socket, url_of

T = TypeVar("T")
#: Connections that may wait to be accepted (bursts of clients).
BACKLOG = 2048


def _uvicorn(app: Any) -> Any:
    uvicorn = require("uvicorn")
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         lifespan="on", ws="none", backlog=BACKLOG))


def run_server(config: RunConfig, service: ServiceConfig,
               on_ready: Callable[[str], None] | None = None,
               sock: socket.socket | None = None) -> None:
    """Bind (unless ``sock`` is bound already), load the engine, call ``on_ready(url)`` and
    serve until interrupted."""
    sock = sock if sock is not None else bind_socket(service.host, service.port)
    server = _uvicorn(create_app(config, service))
    if on_ready is not None:
        url = url_of(sock)
        ready = threading.Thread(target=_when_started, args=(server, lambda: on_ready(url)),
                                 daemon=True)
        ready.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _when_started(server: Any, then: Callable[[], None]) -> None:
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        then()


class BackgroundService:
    """The service on a daemon thread; a context manager. Engines passed in (``policy``,
    ``scorer``) then belong to the server thread's event loop."""

    def __init__(self, config: RunConfig, service: ServiceConfig | None = None, *,
                 policy: Policy | None = None, scorer: StepScorer | None = None,
                 start_timeout_s: float = 300.0) -> None:
        self.service = service or ServiceConfig(port=0)
        self.app = create_app(config, self.service, policy=policy, scorer=scorer)
        self._sock = bind_socket(self.service.host, self.service.port)
        self.url = url_of(self._sock)
        self._server = _uvicorn(self.app)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > start_timeout_s:
                self.stop()
                raise RuntimeError(f"tts service on {self.url} did not start")
            threading.Event().wait(0.05)
            waited += 0.05

    @property
    def engine(self) -> Any:
        """The running :class:`~testtime.api.engine.TTSEngine` (read its counters only)."""
        return self.app.state.engine

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the service's event loop (where its engines live) and wait for
        it: e.g. ``testtime.runner.run`` on the service's own policy and scorer."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.app.state.loop).result(timeout_s)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
