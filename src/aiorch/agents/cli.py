"""`aiorch flow "feature request"`: run an agent flow in-process or on a running service.

Stage progress goes to stderr as each stage finishes; the result (Markdown, or JSON with
`--json`) goes to stdout, so `aiorch flow ... --json > result.json` keeps the progress visible.
Exit status: 0 when the flow completed (whatever QA's verdict), 1 when a stage failed or the
flow could not run, 2 for bad usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp
import click
import msgspec
from rich.console import Console
from rich.markup import escape

from aiorch.agents.flow import (
    FlowEvent,
    FlowResult,
    FlowRunner,
    FlowStarted,
    StageResult,
    StageStarted,
)
from aiorch.agents.prompts import PROMPTS_DIR_ENV, Prompts
from aiorch.agents.render import markdown, stage_line
from aiorch.agents.roles import STAGE_TITLES
from aiorch.config import load_settings
from aiorch.errors import AiorchError
from aiorch.orchestrator import AIOrchestrator


class RemoteError(Exception):
    """The service refused the flow or could not be reached; the message says why."""


@click.command()
@click.argument("request")
@click.option("--flow", "flow_name", default="ba-dev-qa", show_default=True, help="Flow name.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option(
    "--url", envvar="AIORCH_URL", help="Run on a service at this URL instead of in-process."
)
@click.option("--api-key", envvar="AIORCH_API_KEY", help="API key for --url (a Bearer token).")
@click.option("--context", help="Extra context given to every stage (a system message).")
@click.option("--no-cache", is_flag=True, help="Do not use the cache.")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="AIORCH_CONFIG",
    help="TOML settings file (in-process runs).",
)
@click.option(
    "--prompts-dir",
    type=click.Path(exists=True, file_okay=False),
    envvar=PROMPTS_DIR_ENV,
    help="Directory with ba.md, dev.md and/or qa.md overriding the built-in prompts.",
)
def flow(
    request: str,
    flow_name: str,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    context: str | None,
    no_cache: bool,
    config: str | None,
    prompts_dir: str | None,
) -> None:
    """Run an agent flow (BA -> Dev -> QA) on a feature request; REQUEST '-' reads stdin."""
    text = sys.stdin.read() if request == "-" else request
    console = Console(stderr=True)
    try:
        if url:
            events = _remote(url, api_key, flow_name, text, context, not no_cache)
        else:
            events = _local(config, prompts_dir, flow_name, text, context, not no_cache)
        result = asyncio.run(_follow(events, console))
    except (AiorchError, RemoteError) as error:
        message = error.message if isinstance(error, AiorchError) else str(error)
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(result)).decode())
    else:
        click.echo(markdown(result), nl=False)
    sys.exit(0 if result.status == "completed" else 1)


async def _follow(events: AsyncGenerator[FlowEvent, None], console: Console) -> FlowResult:
    """Show each stage as it runs and finishes; return the flow's result."""
    status = console.status("starting")
    status.start()
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, FlowStarted):
                    stages = " -> ".join(s.value for s in event.stages)
                    console.print(
                        f"flow [bold]{escape(event.flow)}[/bold]: {stages}", highlight=False
                    )
                elif isinstance(event, StageStarted):
                    status.update(
                        f"{event.stage.value}: the {STAGE_TITLES[event.stage]} is working"
                    )
                elif isinstance(event, StageResult):
                    mark = (
                        "[green]done[/green]" if event.status == "completed" else "[red]FAIL[/red]"
                    )
                    console.print(
                        f"{mark} {escape(stage_line(event))}", highlight=False, soft_wrap=True
                    )
                else:
                    if event.offline:
                        console.print(
                            "[yellow]OFFLINE: no model is configured; the stages hold "
                            "placeholders.[/yellow]"
                        )
                    return event
    finally:
        status.stop()
    raise RemoteError("the flow ended without a result")


async def _local(
    config: str | None,
    prompts_dir: str | None,
    flow_name: str,
    text: str,
    context: str | None,
    use_cache: bool,
) -> AsyncGenerator[FlowEvent, None]:
    settings = load_settings(config_path=config)
    orchestrator = AIOrchestrator(settings)
    try:
        runner = FlowRunner(orchestrator, prompts=Prompts.load(prompts_dir))
        async for event in runner.events(flow_name, text, context=context, use_cache=use_cache):
            yield event
    finally:
        await orchestrator.close()


async def _remote(
    url: str,
    api_key: str | None,
    flow_name: str,
    text: str,
    context: str | None,
    use_cache: bool,
) -> AsyncGenerator[FlowEvent, None]:
    """The service's SSE stream as the runner's events (stage starts are inferred)."""
    body = {"request": text, "use_cache": use_cache, "stream": True, "context": context}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    endpoint = f"{url.rstrip('/')}/api/ai/flows/{flow_name}"
    # Stages may think for minutes: no total deadline, only one for connecting.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(endpoint, json=body, headers=headers) as response,
        ):
            if response.status != 200:
                raise RemoteError(_error_text(response.status, await response.read()))
            stages: tuple[StageStarted, ...] = ()
            finished = 0
            async for name, data in _sse(response.content):
                if name == "start":
                    started = msgspec.json.decode(data, type=FlowStarted)
                    stages = tuple(
                        StageStarted(stage=s, index=i) for i, s in enumerate(started.stages)
                    )
                    yield started
                    if stages:
                        yield stages[0]
                elif name == "stage":
                    result = msgspec.json.decode(data, type=StageResult)
                    yield result
                    finished += 1
                    if result.status == "completed" and finished < len(stages):
                        yield stages[finished]
                elif name in ("done", "error"):
                    yield _final(data)
                    return
    except aiohttp.ClientError as error:
        raise RemoteError(f"cannot reach {endpoint}: {error}") from None


def _final(data: bytes) -> FlowResult:
    try:
        return msgspec.json.decode(data, type=FlowResult)
    except msgspec.ValidationError:
        raise RemoteError(_error_text(200, data)) from None


async def _sse(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    name = "message"
    data: list[bytes] = []
    async for raw in content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield name, b"\n".join(data)
            name, data = "message", []
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip())


def _error_text(status: int, body: bytes) -> str:
    try:
        error = msgspec.json.decode(body)["error"]
        return f"HTTP {status}: {error['type']}: {error['message']}"
    except (msgspec.DecodeError, KeyError, TypeError):
        return f"HTTP {status}: {body[:300].decode(errors='replace')}"
