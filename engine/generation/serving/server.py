"""uvicorn around the app, whose first exit signal drains the scheduler before the server stops."""

from __future__ import annotations

import asyncio
import sys
import time

import uvicorn

from .app import ServedModel, create_app


class DrainingServer(uvicorn.Server):
    """First SIGTERM/SIGINT: refuse new requests (503), let admitted ones finish within ``drain_timeout``
    seconds, then shut down as uvicorn does. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, served: ServedModel, drain_timeout: float, banner: str = "") -> None:
        super().__init__(config)
        self.served, self.drain_timeout, self.banner = served, drain_timeout, banner
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.banner:  # only once the port is bound: a busy port prints uvicorn's error alone
            print(self.banner, file=sys.stderr, flush=True)

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        sched = self.served.scheduler
        if sched.draining or self.should_exit or self._loop is None:
            super().handle_exit(sig, frame)
            return
        sched.drain()
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

    async def _drain(self) -> None:
        end = time.monotonic() + self.drain_timeout
        while self.served.scheduler.busy and time.monotonic() < end:
            await asyncio.sleep(0.05)
        self.should_exit = True


def serve(served: ServedModel, host: str, port: int, drain_timeout: float, banner: str = "") -> None:
    """Run until drained: the scheduler thread and the HTTP server, both stopped on the way out; ``banner``
    goes to stderr once the port is bound."""
    config = uvicorn.Config(create_app(served), host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=max(1, int(drain_timeout)))
    served.scheduler.start()
    try:
        DrainingServer(config, served, drain_timeout, banner).run()
    finally:
        served.scheduler.stop()


class BackgroundServer:
    """The server on a thread of this process (tests, ``bench serve``): ``url`` once started, ``close()``
    stops the HTTP server and the scheduler. Port 0 takes a free port."""

    def __init__(self, served: ServedModel, host: str = "127.0.0.1", port: int = 0, *,
                 start_scheduler: bool = True) -> None:
        import threading

        self.served = served
        config = uvicorn.Config(create_app(served), host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        if start_scheduler:
            served.scheduler.start()
        self._thread = threading.Thread(target=self.server.run, name="tritongpt-http", daemon=True)
        self._thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.01)
        sock_host, sock_port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{sock_host}:{sock_port}"

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.served.scheduler.stop()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
