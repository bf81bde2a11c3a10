"""`python -m benchmarks.protocol_cost`: what the HTTP protocol's limits cost per request.

Serves the real app (offline, no upstream) over three HTTP protocols in turn and drives
`GET /healthz` (the cheapest route, so the protocol's share is the largest) with wrk:

  httptools   uvicorn's stock httptools protocol: no head limits (before issue 17)
  limited     aiorch.server.protocol.LimitedHttpToolsProtocol: head size, header count and
              header deadline, connection cap (what `aiorch serve` runs)
  h11         uvicorn's h11 protocol, whose h11_max_incomplete_event_size bounds the head

in two shapes: keep-alive connections (one timer armed and cancelled per request), and a new
connection per request (`Connection: close`: the connection cap's check and the timer at
connect). The figure that matters is the server's CPU time per request (user + system, from the
process), which load on the machine disturbs less than throughput; rounds are interleaved and
the median is shown.

`python -m benchmarks.protocol_cost micro` isolates the protocol: the same keep-alive request
fed to each protocol object in process (a stub transport, an app that answers at once), so the
difference per request is the limits' own cost, without the network and the app around it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import psutil

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("httptools", "limited", "h11")
HEADERS = (
    "Authorization: Bearer sk-bench-0123456789abcdef",
    "User-Agent: OpenAI/Python 1.50.0",
    "Accept: application/json",
    "Content-Type: application/json",
    "X-Request-ID: bench-request-0001",
    "Accept-Encoding: gzip, deflate",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@click.group(invoke_without_command=True)
@click.option("--seconds", default=5.0, show_default=True, help="Per measurement.")
@click.option("--rounds", default=3, show_default=True, help="Interleaved rounds per variant.")
@click.option("--connections", default=16, show_default=True)
@click.pass_context
def main(ctx: click.Context, seconds: float, rounds: int, connections: int) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk is needed (apt-get install wrk)")
    shapes = {"keep-alive": (), "new connection": ("Connection: close",)}
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(rounds):
        for variant in VARIANTS:
            for shape, extra in shapes.items():
                cpu_us, rps = _measure(variant, seconds, connections, extra)
                figures.setdefault((variant, shape), []).append((cpu_us, rps))
                click.echo(
                    f"round {round_ + 1}: {variant:9} {shape:14} {cpu_us:7.1f} us CPU/request"
                    f" {rps:9.0f} req/s",
                    err=True,
                )
    click.echo(f"\nGET /healthz, {connections} connections, {seconds:g} s x {rounds} rounds")
    click.echo(f"{'protocol':10} {'shape':15} {'CPU us/request':>15} {'req/s':>9}")
    for (variant, shape), values in figures.items():
        cpu = statistics.median(v[0] for v in values)
        rps = statistics.median(v[1] for v in values)
        click.echo(f"{variant:10} {shape:15} {cpu:15.1f} {rps:9.0f}")


def _measure(
    variant: str, seconds: float, connections: int, extra: tuple[str, ...]
) -> tuple[float, float]:
    port = _free_port()
    env = {**os.environ, "AIORCH_CONFIG": "", "KIMI_API_KEY": "", "QWEN_OLLAMA_URL": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.protocol_cost", "serve", variant, str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(port)
        url = f"http://127.0.0.1:{port}/healthz"
        headers = [arg for h in (*HEADERS, *extra) for arg in ("-H", h)]
        _wrk(url, 1.0, connections, headers)  # warm up
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        requests, rps = _wrk(url, seconds, connections, headers)
        after = process.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return cpu / max(1, requests) * 1e6, rps
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wrk(url: str, seconds: float, connections: int, headers: list[str]) -> tuple[int, float]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", *headers, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rps is None:
        raise click.ClickException(f"cannot read wrk's output:\n{out}")
    return int(requests.group(1)), float(rps.group(1))


def _wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise click.ClickException(f"the server on port {port} did not start")


@main.command()
@click.argument("variant", type=click.Choice(VARIANTS))
@click.argument("port", type=int)
def serve(variant: str, port: int) -> None:
    """Serve the offline app over one protocol (the benchmark starts this itself)."""
    import uvicorn

    from aiorch.server.protocol import ConnectionLimits, ServerConfig

    common = {
        "factory": True,
        "host": "127.0.0.1",
        "port": port,
        "loop": "uvloop",
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
    }
    app = "aiorch.server.main:app_from_env"
    config: uvicorn.Config
    if variant == "limited":
        config = ServerConfig(app, limits=ConnectionLimits(), **common)
    elif variant == "h11":
        config = uvicorn.Config(app, http="h11", h11_max_incomplete_event_size=32768, **common)
    else:
        config = uvicorn.Config(app, http="httptools", **common)
    uvicorn.Server(config).run()


class _Transport:
    """Just enough of an asyncio transport for uvicorn's protocols."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


@main.command()
@click.option("--requests", default=200_000, show_default=True)
@click.option("--rounds", default=5, show_default=True)
def micro(requests: int, rounds: int) -> None:
    """The protocols alone, in process: CPU per keep-alive request."""
    import uvloop

    times = uvloop.run(_micro(requests, rounds))
    click.echo(f"{requests} keep-alive GET requests per round, {rounds} rounds, median:")
    for name, values in times.items():
        click.echo(f"{name:10} {statistics.median(values) / requests * 1e6:6.2f} us CPU/request")


async def _micro(requests: int, rounds: int) -> dict[str, list[float]]:
    import asyncio

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from aiorch.server.protocol import LimitedHttpToolsProtocol

    async def app(scope: object, receive: object, send: object) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,  # type: ignore[operator]
                "headers": [(b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    config = uvicorn.Config(app, proxy_headers=False, lifespan="off", log_level="warning")
    config.load()
    request = (
        "GET /healthz HTTP/1.1\r\nHost: bench\r\n" + "".join(f"{h}\r\n" for h in HEADERS) + "\r\n"
    ).encode()
    times: dict[str, list[float]] = {"httptools": [], "limited": []}
    for _ in range(rounds):
        for name, cls in (("httptools", HttpToolsProtocol), ("limited", LimitedHttpToolsProtocol)):
            state = ServerState()
            protocol = cls(config, state, {})
            transport = _Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            started = time.process_time()
            for _ in range(requests):
                protocol.data_received(request)
                await asyncio.gather(*state.tasks)
            times[name].append(time.process_time() - started)
            assert transport.written >= requests, (name, transport.written)
            protocol.connection_lost(None)
    return times


if __name__ == "__main__":
    main()
