"""The `aiorch` command: a thin group whose subcommands live beside what they drive.

Subcommands are imported only when run, so `aiorch mock-upstream` does not load the server and
`aiorch --help` stays fast. Every option also reads an `AIORCH_`-prefixed environment variable.
"""

from __future__ import annotations

import importlib
import os

import click

# name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "serve": "aiorch.server.cli:serve",
    "query": "aiorch.server.cli:query",
    "mock-upstream": "aiorch.mock.cli:mock_upstream",
    "flow": "aiorch.agents.cli:flow",
    "bench": "aiorch.bench.cli:bench",
    "doctor": "aiorch.doctor.cli:doctor",
}

HELP: dict[str, str] = {
    "serve": "Run the HTTP service.",
    "query": "Ask one question and stream the answer to the terminal.",
    "mock-upstream": "Run a simulator of the Moonshot/OpenAI and Ollama APIs.",
    "flow": "Run an agent flow (BA -> Dev -> QA) on a feature request.",
    "bench": "Measure latency of a backend, the orchestrator or a running aiorch.",
    "doctor": "Answer 'why is the AI slow?' from the metrics.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        # prometheus_client picks multiprocess mode on import when the variable merely exists,
        # so an empty value must be dropped before any subcommand imports it: empty means unset.
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every subcommand.
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP[name]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "AIORCH"})
@click.version_option(package_name="aiorch")
def main() -> None:
    """aiorch: one observable endpoint for Kimi-K2-Thinking and Qwen Coder."""
