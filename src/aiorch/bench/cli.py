"""`aiorch bench`: latency of one backend, the orchestrator in-process, or a running aiorch.

    aiorch bench --target http --url http://127.0.0.1:8000 -c 32 -d 30
    aiorch bench --target http --rate 200 -d 60 --mix loadtest/queries.jsonl --json
    aiorch bench --target orchestrator --offline -n 1000 --plot latency.png
    aiorch bench --target kimi -n 10 -c 2

`--rate` switches to open loop (constant arrival rate, latency from the intended send time);
otherwise the load is closed loop at `--concurrency`. Exit status: 0 when at least one request
succeeded, 1 when none did, 2 for bad options.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aiorch.bench.engine import measure, offline, run_loop
from aiorch.bench.mix import DEFAULT_MIX, MixError, Picker, QueryItem, load_mix
from aiorch.bench.report import make_console, plot, print_summary, to_json
from aiorch.bench.runner import Plan
from aiorch.bench.targets import BackendTarget, Endpoint, HttpTarget, OrchestratorTarget, Target
from aiorch.clients import KimiClient, KimiConfig, QwenClient, QwenConfig
from aiorch.config import load_settings
from aiorch.errors import AiorchError
from aiorch.orchestrator import parse_query_type

TARGETS = ("orchestrator", "http", "kimi", "qwen")


def build_target(
    kind: str,
    *,
    url: str,
    endpoint: Endpoint,
    stream: bool,
    model: str,
    api_key: str | None,
    use_cache: bool,
    max_tokens: int | None,
    thinking: bool | None,
    force_offline: bool,
    pool_size: int,
) -> Target:
    if kind == "http":
        return HttpTarget(
            url,
            endpoint=endpoint,
            stream=stream,
            model=model,
            api_key=api_key,
            use_cache=use_cache,
            max_tokens=max_tokens,
            thinking=thinking,
            pool_size=pool_size,
        )
    if kind == "orchestrator":
        settings = load_settings()
        return OrchestratorTarget(
            offline(settings) if force_offline else settings,
            use_cache=use_cache,
            max_tokens=max_tokens,
            thinking=thinking,
        )
    client = (
        KimiClient(KimiConfig.from_env()) if kind == "kimi" else QwenClient(QwenConfig.from_env())
    )
    if not client.config.is_configured:
        click.secho(
            f"note: no {kind} backend is configured; measuring the offline placeholder",
            fg="yellow",
            err=True,
        )
    return BackendTarget(client, max_tokens=max_tokens, thinking=thinking, stream=stream)


def pick_items(mix: Path | None, query: str | None, query_type: str | None) -> list[QueryItem]:
    if query is not None:
        return [QueryItem(query, parse_query_type(query_type))]
    items = list(load_mix(mix) if mix is not None else DEFAULT_MIX)
    if query_type is not None:
        wanted = parse_query_type(query_type)
        items = [item for item in items if item.query_type is wanted]
        if not items:
            raise MixError(f"no query of type {query_type} in the mix")
    return items


@click.command(context_settings={"show_default": True, "max_content_width": 100})
@click.option("--target", type=click.Choice(TARGETS), default="http", help="What to measure.")
@click.option("--url", default="http://127.0.0.1:8000", help="A running aiorch (--target http).")
@click.option(
    "--endpoint",
    type=click.Choice(["query", "chat"]),
    default="query",
    help="query: POST /api/ai/query; chat: POST /v1/chat/completions.",
)
@click.option("--stream/--no-stream", default=False, help="Ask for a streamed answer (SSE).")
@click.option("--model", default="auto", help="auto, kimi, qwen or a model id (--target http).")
@click.option("--api-key", default=None, help="Bearer key for a protected aiorch.")
@click.option(
    "-n", "--requests", type=click.IntRange(1), default=None, help="Requests (100 if no -d)."
)
@click.option(
    "-d", "--duration", type=click.FloatRange(0, min_open=True), default=None, help="Seconds."
)
@click.option("-c", "--concurrency", type=click.IntRange(1), default=1, help="Closed loop.")
@click.option(
    "-r",
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Open loop at this many requests/s (latency from the intended send time).",
)
@click.option(
    "--mix",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL of {query, query_type?, weight?} (e.g. loadtest/queries.jsonl).",
)
@click.option("--query", default=None, help="Send only this query.")
@click.option("--query-type", default=None, help="Send only queries of this type.")
@click.option("--unique", is_flag=True, help="Tag each query so every one misses the cache.")
@click.option("--no-cache", is_flag=True, help="Send use_cache=false (no cache lookup at all).")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--thinking/--no-thinking", default=None, help="Ask Kimi to think or not.")
@click.option("--offline", "force_offline", is_flag=True, help="Orchestrator: no backends.")
@click.option("--warmup", type=click.IntRange(0), default=0, help="Requests sent and discarded.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, help="Seconds.")
@click.option("--max-in-flight", type=click.IntRange(1), default=10_000, help="Open loop cap.")
@click.option("--seed", type=int, default=0, help="Seed for choosing queries from the mix.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON here."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Latency histogram and CDF as a PNG (needs matplotlib).",
)
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
def bench(
    target: str,
    url: str,
    endpoint: Endpoint,
    stream: bool,
    model: str,
    api_key: str | None,
    requests: int | None,
    duration: float | None,
    concurrency: int,
    rate: float | None,
    mix: Path | None,
    query: str | None,
    query_type: str | None,
    unique: bool,
    no_cache: bool,
    max_tokens: int | None,
    thinking: bool | None,
    force_offline: bool,
    warmup: int,
    timeout: float | None,
    max_in_flight: int,
    seed: int,
    as_json: bool,
    output: Path | None,
    plot_path: Path | None,
    progress: bool,
) -> None:
    """Measure latency of a backend, the orchestrator or a running aiorch."""
    if requests is not None and duration is not None:
        raise click.UsageError("give --requests or --duration, not both")
    if requests is None and duration is None:
        requests = 100
    plan = Plan(
        concurrency=concurrency,
        rate=rate,
        requests=requests,
        duration=duration,
        warmup=warmup,
        timeout=timeout,
        max_in_flight=max_in_flight,
    )
    try:
        items = pick_items(mix, query, query_type)
        chosen = build_target(
            target,
            url=url,
            endpoint=endpoint,
            stream=stream,
            model=model,
            api_key=api_key,
            use_cache=not no_cache,
            max_tokens=max_tokens,
            thinking=thinking,
            force_offline=force_offline,
            pool_size=max(concurrency, max_in_flight if rate else concurrency),
        )
    except MixError as error:
        raise click.UsageError(str(error)) from None
    except AiorchError as error:  # a bad setting or a bad --query-type
        raise click.UsageError(error.message) from None
    picker = Picker(items, seed=seed, unique=unique)
    err = make_console(stderr=True)
    bar = err if progress and not as_json else None
    summary, recorder = run_loop(measure(chosen, picker, plan, console=bar))
    if as_json:
        click.echo(to_json(summary))
    else:
        print_summary(summary, make_console())
    if output is not None:
        output.write_text(to_json(summary) + "\n", encoding="utf-8")
    if plot_path is not None:
        try:
            plot(recorder.latencies, plot_path, f"{summary.target} ({summary.mode} loop)")
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        err.print(f"plot written to {plot_path}")
    if summary.ok == 0:
        sys.exit(1)
