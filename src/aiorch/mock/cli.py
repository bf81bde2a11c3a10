"""`aiorch mock-upstream`: run the simulator. Every option also reads `AIORCH_MOCK_<OPTION>`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from aiorch.mock.serve import ServeSettings, run_worker, supervise
from aiorch.mock.settings import (
    BEHAVIOUR_FIELDS,
    DEFAULT_MODELS,
    FAULT_NAMES,
    Behaviour,
    ConfigError,
    MockConfig,
    load_structured,
    parse_caps_spec,
    parse_model_config,
    parse_rules,
    update,
)

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = Behaviour()


def _option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    long_name = next(n for n in names if n.startswith("--")).lstrip("-")
    envvar = "AIORCH_MOCK_" + long_name.split("/")[0].replace("-", "_").upper()
    return click.option(*names, envvar=envvar, show_envvar=True, **kwargs)


def _check_faults(ctx: click.Context, param: click.Parameter, value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULT_NAMES]
    if unknown:
        raise click.BadParameter(
            f"unknown fault {', '.join(unknown)}; one of {', '.join(FAULT_NAMES)}"
        )
    return ",".join(names)


_ms = click.FloatRange(0, 3_600_000)
_count = click.IntRange(0, 1_000_000)


@click.command("mock-upstream", context_settings={"show_default": True, "max_content_width": 100})
@_option("--host", default="127.0.0.1", help="Address to listen on.")
@_option("--port", type=click.IntRange(1, 65535), default=8900, help="Port to listen on.")
@_option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    help="Processes sharing the port (SO_REUSEPORT). Runtime control needs 1.",
)
@_option("--api-key", default=None, help="Require `Authorization: Bearer KEY` on /v1/*.")
@_option("--models", default=",".join(DEFAULT_MODELS), help="Comma-separated model ids served.")
@_option(
    "--model-config",
    multiple=True,
    metavar="MODEL:FIELD=VALUE[,FIELD=VALUE]",
    help="Per-model behaviour, e.g. kimi-k2-thinking:latency_ms=2000,ttft_ms=500. Repeatable.",
)
@_option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON or TOML file with the fields of POST /_mock/config; options override it.",
)
@_option(
    "--responses",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON or TOML list of rules {match, content, reasoning?, model?} (scripted answers).",
)
@_option("--latency-ms", type=_ms, default=_DEFAULTS.latency_ms, help="Delay before headers.")
@_option("--ttft-ms", type=_ms, default=_DEFAULTS.ttft_ms, help="Headers to first token.")
@_option(
    "--tokens-per-second",
    type=click.FloatRange(0),
    default=_DEFAULTS.tokens_per_second,
    help="Generation rate; 0 means no delay between tokens.",
)
@_option(
    "--jitter-ms",
    type=_ms,
    default=_DEFAULTS.jitter_ms,
    help="Uniform random extra delay added to latency and to time to first token.",
)
@_option("--tokens", type=_count, default=_DEFAULTS.tokens, help="Answer length in tokens.")
@_option(
    "--reasoning-tokens",
    type=_count,
    default=_DEFAULTS.reasoning_tokens,
    help="Thinking length in tokens, when thinking is on.",
)
@_option(
    "--fault",
    default="",
    callback=_check_faults,
    metavar="NAME[,NAME]",
    help=f"Faults to inject: {', '.join(FAULT_NAMES)}.",
)
@_option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=_DEFAULTS.fault_rate,
    help="Share of requests that get a fault (chosen at random among --fault).",
)
@_option(
    "--fault-limit",
    type=_count,
    default=_DEFAULTS.fault_limit,
    help="Inject at most this many faults per model (0: no limit).",
)
@_option("--fault-models", default="", help="Inject faults only for models containing these.")
@_option("--seed", type=int, default=0, help="Seed for fault choice and jitter.")
@_option(
    "--slow-first-token-ms",
    type=_ms,
    default=_DEFAULTS.slow_first_token_ms,
    help="Time to first token under the slow_first_token fault.",
)
@_option(
    "--hang-max-s",
    type=click.FloatRange(0, 3600, min_open=True),
    default=_DEFAULTS.hang_max_s,
    help="A hung request is reset after this long.",
)
@_option(
    "--retry-after-s",
    type=_count,
    default=_DEFAULTS.retry_after_s,
    help="Retry-After sent with the rate_limit fault.",
)
@_option(
    "--cut-after",
    type=_count,
    default=_DEFAULTS.cut_after,
    help="Chunks a `cut` stream sends before dropping the connection.",
)
@_option(
    "--cold-start-ms",
    type=_ms,
    default=_DEFAULTS.cold_start_ms,
    help="Load time paid by the first call to each model (until /_mock/reset).",
)
@_option(
    "--stall-after",
    type=_count,
    default=_DEFAULTS.stall_after,
    help="Token events a `stall` stream sends before going silent.",
)
@_option(
    "--stall-ms", type=_ms, default=_DEFAULTS.stall_ms, help="How long a `stall` stays silent."
)
@_option(
    "--malformed-at",
    type=click.IntRange(1, 1_000_000),
    default=_DEFAULTS.malformed_at,
    help="Which event of the stream `malformed_event` makes a bad one (1 = the first).",
)
@_option(
    "--stream-error-after",
    type=_count,
    default=_DEFAULTS.stream_error_after,
    help="Token events before a `stream_error` event.",
)
@_option(
    "--down-s",
    type=click.FloatRange(0, 86_400),
    default=_DEFAULTS.down_s,
    help="How long a `down` model stays down.",
)
@_option(
    "--down-from",
    type=click.Choice(["first_request", "config"]),
    default=_DEFAULTS.down_from,
    help="Where the `down` window starts: the model's first request, or the last config change.",
)
@_option(
    "--down-fault",
    default=_DEFAULTS.down_fault,
    callback=_check_faults,
    help="What a `down` model does while down (an error fault, reset or hang).",
)
@_option(
    "--tool-calls",
    type=_count,
    default=_DEFAULTS.tool_calls,
    help="Tool calls per turn when tools are offered (0: as many as the prompt names).",
)
@_option(
    "--vary-by-model/--same-across-models",
    default=_DEFAULTS.vary_by_model,
    help="Whether the model id, not only the conversation, decides the answer text.",
)
@_option(
    "--ollama-num-ctx",
    type=click.IntRange(1),
    default=_DEFAULTS.ollama_num_ctx,
    help="Ollama's context when a request sets no options.num_ctx (longer prompts are cut).",
)
@_option(
    "--model-caps",
    multiple=True,
    metavar="MODEL:FIELD=VALUE[,FIELD=VALUE]",
    help="Override a model's capabilities, e.g. qwen3-coder:30b:vision=true. Repeatable.",
)
@_option(
    "--capabilities",
    "capabilities_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON or TOML file of model -> capability overrides (see docs/mock-upstream.md).",
)
@_option("--access-log/--no-access-log", default=False, help="Log every request (slow).")
@_option(
    "--shutdown-timeout",
    type=click.FloatRange(0),
    default=2.0,
    help="Seconds in-flight requests get to finish on SIGTERM.",
)
@click.pass_context
def mock_upstream(ctx: click.Context, /, **options: Any) -> None:
    """Simulate the Moonshot/OpenAI (/v1/chat/completions) and Ollama (/api/chat) APIs.

    Per request, headers `X-Mock-<Field>` (e.g. X-Mock-Latency-Ms, X-Mock-Fault) or a directive
    in the last user message (`[[mock: fault=http_500 latency_ms=300 tokens=50]]`) override the
    per-model config, which overrides these options. See docs/mock-upstream.md.
    """
    try:
        config = build_config(ctx, options)
    except ConfigError as error:
        raise click.BadParameter(str(error)) from None
    host, port, workers = options["host"], options["port"], options["workers"]
    settings = ServeSettings(
        host, port, workers, options["access_log"], options["shutdown_timeout"]
    )
    click.echo(
        f"aiorch mock-upstream: starting {workers} worker(s), "
        f"models {', '.join(config.served_models())}",
        err=True,
    )
    code = run_worker(config, settings) if workers == 1 else supervise(config, settings)
    if code:
        sys.exit(code)


def build_config(ctx: click.Context, options: dict[str, Any]) -> MockConfig:
    """Defaults, then the --config file, then options given on the command line or environment."""
    config = MockConfig()
    if options["config_file"] is not None:
        config = update(
            config, load_structured(options["config_file"]), str(options["config_file"])
        )

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source in (
            click.core.ParameterSource.COMMANDLINE,
            click.core.ParameterSource.ENVIRONMENT,
        )

    raw: dict[str, Any] = {k: options[k] for k in BEHAVIOUR_FIELDS if given(k)}
    for name in ("models", "api_key", "seed"):
        if given(name):
            raw[name] = options[name]
    per_model: dict[str, dict[str, Any]] = {}
    for spec in options["model_config"]:
        model, fields = parse_model_config(spec)
        per_model[model] = {**per_model.get(model, {}), **fields}
    if per_model:
        raw["model_config"] = per_model
    capabilities: dict[str, dict[str, Any]] = {}
    if options["capabilities_file"] is not None:
        loaded = load_structured(options["capabilities_file"])
        if not isinstance(loaded, dict):
            raise ConfigError(f"{options['capabilities_file']}: expected model -> capabilities")
        capabilities.update(loaded.get("capabilities", loaded))
    for spec in options["model_caps"]:
        model, fields = parse_caps_spec(spec)
        capabilities[model] = {**capabilities.get(model, {}), **fields}
    if capabilities:
        raw["capabilities"] = capabilities
    config = update(config, raw, "options")
    path = options["responses"]
    if path is not None:
        config = msgspec.structs.replace(
            config, responses=parse_rules(load_structured(path), str(path))
        )
    return config
