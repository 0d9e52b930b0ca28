"""What a person sees while the demo runs: a live panel, not a line per second.

The panel shows the phase, the model and load level, elapsed and (planned) time left, records, ok and
errors, and the load generator's validity so far (levels valid, the last level's loop lag and read
delay). Every line the demo produces, the per-second load lines included, goes to ``demo.log`` in the
run's directory with a timestamp; the console gets only the milestones (phase starts and ends, each
sweep's result). On a console that is not a terminal (CI, a pipe) the panel is not drawn and the
milestones are plain lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

REFRESH_PER_S = 2  # the demo's own process runs on the measured cores: keep it light


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class DemoDisplay:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.t0 = time.monotonic()
        self.log: IO[str] | None = None
        self.pending: list[str] = []  # lines said before the run directory existed
        self.state: dict[str, Any] = {"phase": "starting"}
        self.valid = 0
        self.levels = 0
        self.invalid: list[str] = []
        self.phase_t0 = self.t0
        self.live: Live | None = None
        if self.console.is_terminal:
            self.live = Live(
                self._render(), console=self.console, refresh_per_second=REFRESH_PER_S, transient=True
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> DemoDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live is not None:
            self.live.stop()
        if self.log is not None:
            self.log.close()
            self.log = None

    def open_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.log = path.open("a", encoding="utf-8", buffering=1)
        for line in self.pending:
            self.log.write(line + "\n")
        self.pending.clear()

    # -- what the demo calls -----------------------------------------------------------------
    def say(self, message: str) -> None:
        """A line for the log; milestones also go to the console."""
        elapsed = time.monotonic() - self.t0
        line = f"{time.strftime('%H:%M:%S')} {elapsed:6.0f}s {message}"
        if self.log is not None:
            self.log.write(line + "\n")
        else:
            self.pending.append(line)
        if message.startswith("[load]"):
            return  # per-second lines: the log only; the panel shows the same
        if self._milestone(message):
            self.console.print(f"[dim]{elapsed:6.0f}s[/] {message}", highlight=False)
        self.state["last"] = message[:160]
        self._refresh()

    @staticmethod
    def _milestone(message: str) -> bool:
        keys = (
            "==",
            "results:",
            "sweep",
            "levels",
            "probe",
            "accuracy",
            "report",
            "error",
            "warning",
            "endpoint",
        )
        return message.startswith(keys) or "valid" in message

    def phase(self, name: str, planned_s: float | None = None) -> None:
        self.phase_t0 = time.monotonic()
        self.state.update(phase=name, planned_s=planned_s, model=None, level=None, load=None)
        self._refresh()

    def target(
        self, model: str | None, levels: list[int] | None = None, planned_s: float | None = None
    ) -> None:
        """The sweep (or run) now under way, and how long it is planned to take."""
        self.state.update(model=model, levels=levels, sweep_t0=time.monotonic(), sweep_planned_s=planned_s)
        self._refresh()

    def load_status(self, status: dict[str, Any]) -> None:
        """The load generator's status.json (polled once a second)."""
        self.state["load"] = status
        self._refresh()

    def level_results(self, rows: list[dict[str, Any]]) -> None:
        """Each finished level's validity (from a run's summary): counts toward 'valid so far'."""
        for row in rows:
            self.levels += 1
            if row.get("valid"):
                self.valid += 1
            else:
                self.invalid.append(str(row.get("label")))
            self.state["last_health"] = row
        self._refresh()

    # -- rendering ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def _render(self) -> Group:
        s = self.state
        now = time.monotonic()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right")
        table.add_column()
        planned = s.get("planned_s")
        table.add_row(
            "phase",
            f"{s.get('phase')}  {_clock(now - self.phase_t0)}"
            + (f" of ~{_clock(planned)}" if planned else "")
            + f"   (demo {_clock(now - self.t0)})",
        )
        if s.get("model"):
            levels = s.get("levels")
            text = f"{s['model']}" + (f"  levels {levels}" if levels else "")
            sweep_planned = s.get("sweep_planned_s")
            if sweep_planned:
                left = sweep_planned - (now - s.get("sweep_t0", now))
                text += f"  left ~{_clock(left)}"
            table.add_row("running", text)
        load = s.get("load")
        if load and load.get("stage") is not None:
            statuses = load.get("statuses", {})
            ok = statuses.get("ok", 0)
            errors = sum(v for k, v in statuses.items() if k != "ok")
            where = (
                "draining"
                if load.get("draining")
                else f"level {load['stage_index'] + 1}/{load['stages']} {load['stage']}"
            )
            table.add_row(
                "load",
                f"{where}  t={load.get('stage_elapsed_s', 0):.0f}s  records {load.get('records', 0)}  "
                f"ok {ok}  errors {errors}",
            )
        if self.levels:
            health = s.get("last_health") or {}
            lag, read = health.get("loop_lag_p99_s"), health.get("read_delay_p99_s")
            detail = (f"  last: loop lag p99 {lag * 1e3:.1f} ms" if lag is not None else "") + (
                f", read delay p99 {read * 1e3:.1f} ms" if read is not None else ""
            )
            style = "green" if self.valid == self.levels else "yellow"
            table.add_row("validity", Text(f"{self.valid}/{self.levels} levels valid{detail}", style=style))
        if s.get("last"):
            table.add_row("", Text(str(s["last"]), style="dim"))
        return Group(table)
