"""Running a plan with a progress bar on a fast event loop, and building targets from settings.

Shared by `aiorch bench` and the guide's two scripts, which are thin wrappers over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from aiorch.bench.mix import Picker
from aiorch.bench.runner import Plan, run
from aiorch.bench.stats import Recorder, Summary
from aiorch.bench.targets import Target
from aiorch.config import Settings

T = TypeVar("T")


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: the load generator must not be the bottleneck."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def offline(settings: Settings) -> Settings:
    """The same settings with every backend offline, whatever the environment configures."""
    services = {
        name: msgspec.structs.replace(service, protocol="offline")
        for name, service in settings.services.items()
    }
    return msgspec.structs.replace(settings, services=services)


async def measure(
    target: Target,
    picker: Picker,
    plan: Plan,
    *,
    console: Console | None = None,
    label: str = "bench",
) -> tuple[Summary, Recorder]:
    """Run the plan, with a progress bar on `console` if given; always closes the target."""
    recorder = Recorder()
    try:
        if console is None:
            return await run(target, picker, plan, recorder=recorder), recorder
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]} done, {task.fields[failed]} errors"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            total = float(plan.requests) if plan.requests is not None else plan.duration
            task = bar.add_task(label, total=total, done=0, failed=0)

            def hook(done: int, failed: int, elapsed: float) -> None:
                position = float(done) if plan.requests is not None else elapsed
                bar.update(task, completed=position, done=done, failed=failed)

            summary = await run(target, picker, plan, progress=hook, recorder=recorder)
        return summary, recorder
    finally:
        await target.close()
