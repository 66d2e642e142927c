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
from typing import Any, TypeVar

from testtime.api.app import create_app
from testtime.api.options import ServiceConfig
from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.serving import ThreadedServer, bind_socket, url_of, uvicorn_server

T = TypeVar("T")


def run_server(config: RunConfig, service: ServiceConfig,
               on_ready: Callable[[str], None] | None = None,
               sock: socket.socket | None = None) -> None:
    """Bind (unless ``sock`` is bound already), load the engine, call ``on_ready(url)`` and
    serve until interrupted."""
    sock = sock if sock is not None else bind_socket(service.host, service.port)
    server = uvicorn_server(create_app(config, service))
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


class BackgroundService(ThreadedServer):
    """The service on a daemon thread; a context manager. Engines passed in (``policy``,
    ``scorer``) then belong to the server thread's event loop."""

    def __init__(self, config: RunConfig, service: ServiceConfig | None = None, *,
                 policy: Policy | None = None, scorer: StepScorer | None = None,
                 start_timeout_s: float = 300.0) -> None:
        self.service = service or ServiceConfig(port=0)
        super().__init__(create_app(config, self.service, policy=policy, scorer=scorer),
                         self.service.host, self.service.port, what="tts service",
                         start_timeout_s=start_timeout_s, stop_timeout_s=30.0)

    @property
    def engine(self) -> Any:
        """The running :class:`~testtime.api.engine.TTSEngine` (read its counters only)."""
        return self.app.state.engine

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the service's event loop (where its engines live) and wait for
        it: e.g. ``testtime.runner.run`` on the service's own policy and scorer."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.app.state.loop).result(timeout_s)
