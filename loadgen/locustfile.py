"""The Locust entry point: users, the load shape, and the wiring of master and workers.

Every Locust process (master, each worker, or the one process of a local run) loads this file with
``--m3bench-config run.json`` (or ``M3BENCH_CONFIG``): a resolved ``RunConfig``. Run it through
``m3bench load run``, or by hand, e.g. for a worker on another host::

    locust -f loadgen/locustfile.py --worker --master-host HOST --m3bench-config run.json

Closed loop: one ``ChatUser`` per concurrent stream. Open loop: one ``OpenLoopDriver`` per process,
which sends its share of the stage's absolute arrival schedule (users do not pace it).

Stopping: ``STOP_SIGNAL`` (SIGUSR1, from ``m3bench load run`` when it gets SIGTERM/SIGINT) makes the
master stop every sender at once and drain for at most ``STOP_DRAIN_S``. Started by ``m3bench load
run`` (``M3BENCH_PARENT_PID`` set), a process also asks the kernel for ``PARENT_GONE_SIGNAL`` when its
parent dies (``PR_SET_PDEATHSIG``) and watches the parent's pid: if the parent is gone (even by SIGKILL)
it flushes its records and exits within a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path
from typing import Any

import gevent
from locust import LoadTestShape, User, constant, events, task
from locust import runners as locust_runners
from locust.runners import LocalRunner, MasterRunner, Runner, WorkerRunner

from loadgen import controller as controller_module
from loadgen import worker as worker_module
from loadgen.profile import RunConfig
from loadgen.run import PARENT_ENV, PARENT_GONE_SIGNAL, STOP_DRAIN_S, STOP_SIGNAL

PR_SET_PDEATHSIG = 1
PARENT_GONE_EXIT = 3

_state: dict[str, Any] = {"runtime": None, "controller": None, "runner": None}

# Locust declares a worker missing after 3 s without a heartbeat; a worker building its runtime (task
# set, request bodies, grader processes) on a loaded machine can take longer. Locust has no option for
# it: the master reads this module global whenever a worker registers or beats (locust 2.47, the pinned
# range; tests/unit/test_loadgen_profile.py checks that a new worker gets it).
HEARTBEAT_LIVENESS_S = 20
locust_runners.HEARTBEAT_LIVENESS = HEARTBEAT_LIVENESS_S


def _runtime() -> worker_module.WorkerRuntime:
    runtime = _state["runtime"]
    assert runtime is not None, "this process has no m3bench runtime (is --m3bench-config set?)"
    return runtime  # type: ignore[no-any-return]


class ChatUser(User):
    """A closed-loop stream: sends the next request as soon as the previous reply has ended."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = _runtime().user_rng()
        self.backoff = _runtime().stream_backoff()

    @task
    def chat(self) -> None:
        _runtime().closed_loop_step(self.rng, self.backoff)


class OpenLoopDriver(User):
    """Sends this process's share of an open-loop schedule; one per process."""

    wait_time = constant(0)

    @task
    def drive(self) -> None:
        _runtime().open_loop_drive()


class M3Shape(LoadTestShape):
    """Stages, ramps and sweeps of the profile; the controller decides, this reports to Locust."""

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        control = _state["controller"]
        runner = self.runner
        if control is None or runner is None:
            return None
        return control.tick(_worker_positions(runner), runner.send_message)  # type: ignore[no-any-return]


def _worker_positions(runner: Runner) -> dict[str, int]:
    if isinstance(runner, MasterRunner):
        indexes = sorted(
            runner.get_worker_index(client.id)  # type: ignore[no-untyped-call]
            for client in runner.clients.ready + runner.clients.running + runner.clients.spawning
        )
        return {f"w{index}": position for position, index in enumerate(indexes)}
    return {"local": 0}


def _raise_priority(priority: str) -> None:
    """A busy machine delays a generator's reads; a higher priority keeps them prompt.

    Falls back (realtime -> high -> default) with a warning where the privilege is missing.
    """
    if priority == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(5))
            return
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "cannot run the generator under SCHED_FIFO (%s); using nice", exc
            )
    if priority in ("realtime", "high"):
        try:
            os.nice(-10)
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot raise the generator's priority: %s", exc)


def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--m3bench-config",
        env_var="M3BENCH_CONFIG",
        default="",
        help="Resolved m3bench RunConfig (JSON) written by `m3bench load run`.",
    )


def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    path = getattr(options, "m3bench_config", "") if options is not None else ""
    if not path:
        return
    _die_with_parent()
    config = RunConfig.model_validate_json(Path(path).read_text(encoding="utf-8"))
    assert config.run_id is not None
    run_dir = config.out_dir / config.run_id
    cpus = config.profile.generator.cpus
    if cpus:
        os.sched_setaffinity(0, cpus)
    _raise_priority(config.profile.generator.priority)
    runner = environment.runner
    if isinstance(runner, (MasterRunner, LocalRunner)):
        control = controller_module.Controller(config, run_dir, {"closed": ChatUser, "open": OpenLoopDriver})
        _state["controller"] = control
        runner.register_message(worker_module.MSG_HELLO, lambda msg, **_: control.on_hello(msg.data))
        runner.register_message(worker_module.MSG_RECORDS, lambda msg, **_: control.on_records(msg.data))
        runner.register_message(worker_module.MSG_DONE, lambda msg, **_: control.on_done(msg.data))
        runner.register_message(worker_module.MSG_DRAINED, lambda msg, **_: control.on_drained(msg.data))
        _state["runner"] = runner
        gevent.signal_handler(STOP_SIGNAL, _on_stop_signal)
    if isinstance(runner, (WorkerRunner, LocalRunner)):
        tag = "local" if isinstance(runner, LocalRunner) else f"w{runner.worker_index}"
        runtime = worker_module.WorkerRuntime(config, run_dir, tag, runner.send_message)
        _state["runtime"] = runtime
        runner.register_message(
            worker_module.MSG_STAGE,
            lambda msg, **_: runtime.on_stage(msg.data, int(msg.data["positions"].get(tag, 0))),
        )
        runner.register_message(worker_module.MSG_DRAIN, lambda msg, **_: runtime.on_drain())
        runner.send_message(worker_module.MSG_HELLO, runtime.hello())


def _parent_pid() -> int | None:
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None


def _parent_gone() -> None:
    """The run's parent died: flush what was recorded and exit now, with a hard limit of 2 s."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(2)  # whatever happens below, the process ends
    logging.getLogger(__name__).warning("m3bench load run (pid %s) is gone: stopping", _parent_pid())
    runtime = _state["runtime"]
    if runtime is not None:
        runtime.draining = True
        with contextlib.suppress(Exception):
            runtime.writer.sync()
            runtime.grades.sync()
    control = _state["controller"]
    if control is not None:
        with contextlib.suppress(Exception):
            control.finish()
    os._exit(PARENT_GONE_EXIT)


def _on_parent_signal() -> None:
    parent = _parent_pid()
    if parent is not None and os.getppid() != parent:  # not a thread of a live parent ending
        _parent_gone()


def _watch_parent(parent: int) -> None:
    while True:
        gevent.sleep(0.5)
        if os.getppid() != parent:
            _parent_gone()


def _die_with_parent() -> None:
    """Started by ``m3bench load run``: end when it ends, however it ends."""
    parent = _parent_pid()
    if parent is None:
        return
    gevent.signal_handler(PARENT_GONE_SIGNAL, _on_parent_signal)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(PARENT_GONE_SIGNAL), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request above took effect
        _parent_gone()
    gevent.spawn(_watch_parent, parent)


def _on_stop_signal() -> None:
    control, runner = _state["controller"], _state["runner"]
    if control is not None and runner is not None:
        logging.getLogger(__name__).warning("stop signal: no more sends, draining for %g s", STOP_DRAIN_S)
        control.stop_early(runner.send_message, STOP_DRAIN_S)


def _on_quitting(environment: Any, **_: Any) -> None:
    runtime = _state["runtime"]
    if runtime is not None:
        runtime.close()
    control = _state["controller"]
    if control is not None:
        control.finish()
        # Failed requests are data in the records, not a failed run.
        environment.process_exit_code = 0 if control.finished else 1


# Locust's event hooks are untyped; registering by call keeps these functions type-checked.
events.init_command_line_parser.add_listener(_arguments)  # type: ignore[no-untyped-call]
events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]
