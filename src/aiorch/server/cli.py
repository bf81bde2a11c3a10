"""`aiorch serve` and `aiorch query`."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from aiorch.config import Settings, load_settings
from aiorch.errors import AiorchError, ConfigError
from aiorch.types import Service, StreamChunk, StreamStart


def settings_or_exit(config: str | None) -> Settings:
    try:
        return load_settings(config_path=config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def prompts_or_exit() -> None:
    """The agents' prompt files are read by each worker; a bad one should stop us here, clearly."""
    from aiorch.agents.prompts import Prompts

    try:
        Prompts.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def describe_backends(settings: Settings) -> list[str]:
    lines = []
    for service in Service:
        backend = settings.backend(service)
        where = backend.url or "no upstream"
        lines.append(
            f"  {service.value}: {backend.kind.value} backend, model {backend.model_id} ({where})"
        )
    return lines


@click.command()
# show_envvar also puts the variable into error messages: a bad AIORCH_PORT must say so.
@click.option(
    "--host", default="127.0.0.1", show_default=True, envvar="AIORCH_HOST", show_envvar=True
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="AIORCH_PORT",
    show_envvar=True,
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="AIORCH_WORKERS",
    show_envvar=True,
    help="Worker processes (metrics are merged across them).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="AIORCH_CONFIG",
    show_envvar=True,
    help="TOML file with settings beyond the environment.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    host: str, port: int, workers: int, config: str | None, log_level: str, access_log: bool
) -> None:
    """Run the HTTP service."""
    import uvicorn

    if config:
        os.environ["AIORCH_CONFIG"] = config  # each worker loads the same settings
    os.environ["AIORCH_HOST"], os.environ["AIORCH_PORT"] = host, str(port)
    settings = settings_or_exit(config)
    prompts_or_exit()
    click.echo(f"aiorch serving on http://{host}:{port} with {workers} worker(s)", err=True)
    for line in describe_backends(settings):
        click.echo(line, err=True)
    if settings.offline:
        click.secho(
            "WARNING: OFFLINE MODE. No model is configured (set KIMI_API_KEY or KIMI_OLLAMA_URL,"
            " QWEN_OLLAMA_URL or QWEN_BASE_URL); answers are placeholders labelled offline.",
            fg="yellow",
            bold=True,
            err=True,
        )
    from aiorch.server import workers as supervisor

    # Not uvicorn.run: several workers need a supervisor that marks dead workers' metrics.
    supervisor.serve(
        uvicorn.Config(
            "aiorch.server.main:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
        )
    )


@click.command()
@click.argument("text")
@click.option(
    "--type", "query_type", help="code, reasoning, requirements, testing, general or unknown."
)
@click.option("--model", default="auto", show_default=True, help="auto, kimi, qwen or a model id.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), envvar="AIORCH_CONFIG")
@click.option("--no-cache", is_flag=True, help="Do not use the cache.")
def query(
    text: str, query_type: str | None, model: str, config: str | None, no_cache: bool
) -> None:
    """Ask one question and stream the answer to the terminal (in-process, no server needed)."""
    settings = settings_or_exit(config)
    try:
        asyncio.run(_stream_one(settings, text, query_type, model, not no_cache))
    except AiorchError as error:
        click.secho(f"error ({error.error_type}): {error.message}", fg="red", err=True)
        sys.exit(1)


async def _stream_one(
    settings: Settings, text: str, query_type: str | None, model: str, use_cache: bool
) -> None:
    from aiorch.orchestrator import AIOrchestrator, QueryOptions, build_messages
    from aiorch.routing import parse_query_type

    orchestrator = AIOrchestrator(settings)
    try:
        options = QueryOptions(
            query_type=parse_query_type(query_type),
            service=orchestrator.router.service_for_model(model),
            use_cache=use_cache,
        )
        async for event in orchestrator.stream(build_messages(text), options):
            if isinstance(event, StreamStart):
                label = " [OFFLINE]" if event.offline else ""
                click.secho(
                    f"# {event.query_type.value} -> {event.selected_service.value} "
                    f"({event.model}){label}",
                    fg="cyan",
                    err=True,
                )
            elif isinstance(event, StreamChunk):
                if event.reasoning_content:
                    click.secho(event.reasoning_content, nl=False, dim=True)
                if event.content:
                    click.echo(event.content, nl=False)
                if event.finish_reason is not None:
                    click.echo()
                    if event.usage is not None:
                        click.secho(
                            f"# tokens: {event.usage.prompt_tokens} in, "
                            f"{event.usage.completion_tokens} out",
                            fg="cyan",
                            err=True,
                        )
    finally:
        await orchestrator.close()


__all__ = ["query", "serve"]
