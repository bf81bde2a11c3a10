"""`aiorch doctor`: the guide's "the AI is slow" checklist, run against a live aiorch.

Exit codes: 0 healthy, 1 warnings, 2 an SLO breached or an endpoint down (also when aiorch or
Prometheus cannot be reached). Options read `AIORCH_DOCTOR_<OPTION>` through the group's prefix;
the metrics token also reads `AIORCH_METRICS_TOKEN`, the variable the service itself uses.
"""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console

from aiorch.doctor import prometheus, sources
from aiorch.doctor.checks import diagnose
from aiorch.doctor.observation import Observation, Thresholds
from aiorch.doctor.render import render, to_json


@click.command(
    context_settings={"show_default": True, "max_content_width": 100},
    epilog="Exit codes: 0 healthy, 1 warnings, 2 an SLO breached or an endpoint down. "
    "See docs/doctor.md.",
)
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    help="aiorch's base URL: /metrics and /readyz are read from it.",
)
@click.option(
    "--prometheus-url",
    default=None,
    help="Read the metrics from this Prometheus server instead of scraping aiorch.",
)
@click.option("--job", default="aiorch", help="With --prometheus-url: aiorch's scrape job.")
@click.option(
    "--window",
    default="5m",
    help="With --prometheus-url: the range the rates and quantiles cover (a PromQL duration).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0, 3600),
    default=5.0,
    help="Seconds between the two scrapes of /metrics; 0 takes one (totals since start).",
)
@click.option(
    "--kimi-slo",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    help="Kimi's p95 latency SLO in seconds.",
)
@click.option(
    "--qwen-slo",
    type=click.FloatRange(0, min_open=True),
    default=15.0,
    help="Qwen's p95 latency SLO in seconds.",
)
@click.option(
    "--slo",
    "slos",
    multiple=True,
    metavar="SERVICE=SECONDS",
    help="p95 latency SLO of another configured service (repeatable); a service without one "
    "is held to the loosest SLO given.",
)
@click.option(
    "--metrics-token",
    envvar=["AIORCH_DOCTOR_METRICS_TOKEN", "AIORCH_METRICS_TOKEN"],
    default=None,
    help="Bearer token for /metrics, when aiorch sets AIORCH_METRICS_TOKEN.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    help="Seconds to wait for each HTTP answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Show the numbers behind passed checks too.")
def doctor(
    url: str,
    prometheus_url: str | None,
    job: str,
    window: str,
    interval: float,
    kimi_slo: float,
    qwen_slo: float,
    slos: tuple[str, ...],
    metrics_token: str | None,
    timeout: float,
    as_json: bool,
    verbose: bool,
) -> None:
    """Answer "why is the AI slow?" from aiorch's metrics, in the guide's checklist order.

    Checks /metrics, every service's latency against its SLO, each agent's latency, time to
    first token, which phase of a request grew (aiorch's own or the upstream's), fallbacks, the
    cache hit rate, errors, breakers and in-flight requests, and each backend's readiness;
    prints the findings most severe first, each with its evidence and next step.
    """
    thresholds = Thresholds(slo_seconds={"kimi": kimi_slo, "qwen": qwen_slo, **_slos(slos)})
    status = Console(stderr=True)
    if prometheus_url:
        try:
            observation = prometheus.observe(
                prometheus_url, aiorch_url=url, job=job, window=window, timeout=timeout
            )
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--window") from None
    else:
        observation = _scrape(url, interval, timeout, metrics_token, status, quiet=as_json)
    report = diagnose(observation, thresholds)
    if as_json:
        click.echo(to_json(report))
    else:
        render(report, Console(), verbose=verbose)
    sys.exit(report.exit_code)


def _slos(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for value in values:
        service, _, seconds = value.partition("=")
        try:
            out[service.strip()] = float(seconds)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not SERVICE=SECONDS", param_hint="--slo"
            ) from None
        if not service.strip() or out[service.strip()] <= 0:
            raise click.BadParameter(f"{value!r} is not SERVICE=SECONDS", param_hint="--slo")
    return out


def _scrape(
    url: str, interval: float, timeout: float, token: str | None, status: Console, *, quiet: bool
) -> Observation:
    def wait(seconds: float) -> None:
        if quiet or not status.is_terminal:
            time.sleep(seconds)
            return
        with status.status(f"Scraped {url}/metrics; scraping again in {seconds:g} s..."):
            time.sleep(seconds)

    return sources.observe(url, interval=interval, timeout=timeout, token=token, wait=wait)
