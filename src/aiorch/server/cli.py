"""`aiorch serve` and `aiorch query`."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from aiorch.config import Settings, load_settings
from aiorch.errors import AiorchError, ConfigError
from aiorch.redact import redact_url


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
    for service in settings.services.values():
        where = redact_url(service.url) if service.url else "no upstream"
        lines.append(
            f"  {service.name}: {service.kind.value} backend, model {service.model_id} ({where})"
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
    from aiorch.server.protocol import ConnectionLimits, ServerConfig

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
    server = settings.server
    limits = ConnectionLimits(
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        header_timeout=server.header_timeout_seconds,
        max_connections=server.max_connections,
    )
    supervisor.serve(
        ServerConfig(
            "aiorch.server.main:app_from_env",
            limits=limits,  # over httptools, with the limits it lacks (server/protocol.py)
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            log_level=log_level,
            access_log=access_log,
            # uvicorn would trust X-Forwarded-For from 127.0.0.1 (or $FORWARDED_ALLOW_IPS) by
            # default: any local process could pick the client address the rate limits see.
            proxy_headers=bool(settings.server.trusted_proxies),
            forwarded_allow_ips=list(settings.server.trusted_proxies),
            timeout_graceful_shutdown=int(server.shutdown_grace_seconds),
            timeout_keep_alive=server.keep_alive_seconds,
        )
    )


@click.command()
@click.argument("text")
@click.option(
    "--type", "query_type", help="code, reasoning, requirements, testing, general or unknown."
)
@click.option(
    "--model",
    default="auto",
    show_default=True,
    help="auto, a service (kimi, qwen), a model id or alias, service/model-id, or multi.",
)
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
    from aiorch.answer import Answer, Delta
    from aiorch.orchestrator import AIOrchestrator, parse_query_type, query_request
    from aiorch.pipeline import Head
    from aiorch.planning import Options

    orchestrator = AIOrchestrator(settings)
    try:
        options = Options(
            query_type=parse_query_type(query_type), cache="on" if use_cache else "off"
        )
        request = query_request(text, model=model, stream=True)
        async for event in orchestrator.stream(request, options):
            if isinstance(event, Head):
                label = " [OFFLINE]" if event.offline else ""
                click.secho(
                    f"# {event.query_type.value} -> {event.selected} ({event.model}){label}",
                    fg="cyan",
                    err=True,
                )
            elif isinstance(event, Delta):
                if event.index != 0:
                    continue
                if event.reasoning:
                    click.secho(event.reasoning, nl=False, dim=True)
                if event.content:
                    click.echo(event.content, nl=False)
            elif isinstance(event, Answer):
                click.echo()
                usage = event.usage
                click.secho(
                    f"# tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out; "
                    f"finished: {event.finish_reason}",
                    fg="cyan",
                    err=True,
                )
    finally:
        await orchestrator.close()


__all__ = ["query", "serve"]
