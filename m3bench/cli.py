"""The ``m3bench`` command: one Typer app with a sub-command group per pipeline stage."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="m3bench",
    help="Benchmark INT4 multimodal models served by vLLM on Ray Serve, under Locust load.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each stage owns its command group; they are imported here so `m3bench --help` lists all.
    from loadgen.cli import app as load_app
    from loadgen.tasks.cli import app as tasks_app
    from m3bench.dashboards_cli import app as dashboards_app
    from m3bench.demo.cli import demo as demo_command
    from m3bench.report.cli import report as report_command
    from serving.cli import app as serve_app
    from serving.convert.cli import app as convert_app
    from serving.embedded.cli import app as models_app

    app.add_typer(models_app, name="models", help="Build and inspect the embedded tiny INT4 VLMs.")
    app.add_typer(tasks_app, name="tasks", help="Build, inspect and validate task sets.")
    app.add_typer(load_app, name="load", help="Run load tests against an OpenAI-compatible endpoint.")
    app.add_typer(dashboards_app, name="dashboards", help="Rules, dashboards, local Prometheus.")
    app.add_typer(serve_app, name="serve", help="Serve a model catalog on vLLM + Ray Serve.")
    app.add_typer(convert_app, name="convert", help="Convert published quantized checkpoints for vLLM.")
    app.command("demo", help="Run the whole benchmark on the embedded default.")(demo_command)
    app.command("report", help="Render the capacity-planning report from a results directory.")(
        report_command
    )


_register()


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
