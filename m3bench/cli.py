"""The ``m3bench`` command: one Typer app with a sub-command group per pipeline stage.

Each stage's command group lives in its own package and is imported only when that command runs:
vLLM, Ray, torch and transformers cost seconds to import, and ``m3bench --help`` or ``m3bench tasks
build`` need none of them. The table below is what ``--help`` lists without importing anything.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# name -> (module:attribute, help); the attribute is a Typer app (a group) or a plain function (a command)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("serving.embedded.cli:app", "Build and inspect the embedded tiny INT4 VLMs."),
    "tasks": ("benchmark.tasks.cli:app", "Build, inspect, validate and export task sets."),
    "grade": ("benchmark.grading.cli:grade", "Grade a file of answers offline (pass@k per language)."),
    "load": ("loadgen.cli:app", "Run load tests against an OpenAI-compatible endpoint."),
    "trace": ("loadgen.traces.cli:app", "Arrival traces: synthesize a day, inspect a trace file."),
    "dashboards": ("observability.cli:app", "Rules, dashboards, local Prometheus."),
    "serve": ("serving.cli:app", "Serve a model catalog on vLLM + Ray Serve."),
    "convert": ("serving.convert.cli:app", "Convert published quantized checkpoints for vLLM."),
    "demo": ("m3bench.demo.cli:demo", "Run the whole benchmark on the embedded default."),
    "report": ("m3bench.report.cli:report", "Render the capacity-planning report from a results directory."),
}


class LazyGroup(TyperGroup):
    """A command group that imports a sub-command's module only when that sub-command is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    _listing = False  # True while this group's own help is printed: list names, import nothing

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        target, help_text = COMMANDS[cmd_name]
        if self._listing:
            return _Placeholder(cmd_name, help_text)
        module_name, attribute = target.split(":")
        obj = getattr(importlib.import_module(module_name), attribute)
        command: Any
        if isinstance(obj, typer.Typer):
            command = typer.main.get_group(obj)  # a group even when it has one command (convert grace)
        else:
            sub = typer.Typer()
            sub.command(cmd_name, help=help_text)(obj)
            command = typer.main.get_command(sub)
        command.help = command.help or help_text
        command.short_help = help_text
        return command


class _Placeholder(TyperCommand):
    """What the top-level ``--help`` lists for a sub-command it has not imported: its name and help."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, short_help=help_text)


app = typer.Typer(
    name="m3bench",
    cls=LazyGroup,
    help="Benchmark INT4 multimodal models served by vLLM on Ray Serve, under Locust load.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Benchmark INT4 multimodal models served by vLLM on Ray Serve, under Locust load."""


def main() -> None:
    """Entry point: every usage or input error ends as one line on stderr and exit status 2."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # click's ClickException family (usage and parameter errors)
        fmt = getattr(e, "format_message", None)
        message = " ".join((fmt() if callable(fmt) else str(e)).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(int(getattr(e, "exit_code", 2)) or 2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
