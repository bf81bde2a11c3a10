"""Run the mock: one process, or N worker processes sharing the port with SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from aiohttp import web

from aiorch.mock.app import create_app
from aiorch.mock.settings import MockConfig


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str
    port: int
    workers: int = 1
    access_log: bool = False
    shutdown_timeout: float = 2.0


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:  # optional: the mock is only faster with it
        return asyncio.run

    def run(coroutine: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)

    return run


async def _serve(config: MockConfig, settings: ServeSettings, reuse_port: bool) -> None:
    app = create_app(config, workers=settings.workers)
    runner = web.AppRunner(
        app,
        # Cancel a handler when its client goes away, so hung and slow requests cost nothing.
        handler_cancellation=True,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, backlog=4096, reuse_port=reuse_port or None
        )
        await site.start()
        print(
            f"aiorch mock-upstream: listening on http://{settings.host}:{settings.port}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run_worker(config: MockConfig, settings: ServeSettings, *, reuse_port: bool = False) -> int:
    """Serve until SIGTERM or SIGINT; the exit code (1 if the port cannot be bound)."""
    if settings.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _runner()(_serve(config, settings, reuse_port))
    except OSError as error:
        print(
            f"aiorch mock-upstream: cannot listen on {settings.host}:{settings.port}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    return 0


def _worker(config: MockConfig, settings: ServeSettings) -> None:
    sys.exit(run_worker(config, settings, reuse_port=True))


def supervise(config: MockConfig, settings: ServeSettings) -> int:
    """Start the workers and wait; SIGTERM/SIGINT stop them all, and so does one dying."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(config, settings), name=f"mock-worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    if stopping:
        stop(signal.SIGTERM, None)
    wait([worker.sentinel for worker in workers])
    failed = not stopping
    stop(signal.SIGTERM, None)
    for worker in workers:
        worker.join(settings.shutdown_timeout + 5)
        if worker.is_alive():
            worker.kill()
            worker.join()
    return 1 if failed else 0
