"""Whether a stage's figures can be trusted, and if not, who is to blame and on what evidence.

Every finding names a party: ``client`` (the load generator: it read, sent or computed late),
``machine`` (the generator was ready but waited for a CPU: other processes had the cores; evidence is
its run-queue wait from /proc/self/schedstat exceeding its own CPU time), or ``server`` (a property of
the server's replies, such as several tokens per network write). Limits are the profile's
``generator`` settings; none is relaxed here.

First tokens that share a read with the second are split by the read's own evidence:

* ``client_late``: the read came more than ``max_read_delay_s`` after the kernel's arrival stamp of its
  bytes, or the record has no kernel stamp to tell: the first token may have arrived earlier than the
  read shows, so its TTFT is only an upper bound. Above ``max_ttft_upper_bound_fraction`` the stage is
  invalid (client or machine).
* ``server_coalesced``: the read was prompt (delay within the limit) yet carried two tokens: they were
  already together when the reader woke, i.e. the server wrote them together. TTFT is exact; the stage
  stays valid and reports tokens per network write. (A kernel stamp marks the last segment of a read; a
  reader that woke late for the first of two separate segments is covered by the loop-lag rule.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from loadgen.profile import Generator
from loadgen.records import RequestRecord
from loadgen.summary_model import Distribution, Finding, Party, Timing, Validity, WorkerHealth

FirstRead = Literal["separate", "server_coalesced", "client_late"]


def first_read(record: RequestRecord, max_read_delay_s: float) -> FirstRead | None:
    """How the first content token was read; None when the reply had fewer than two content chunks."""
    offsets = record.chunk_offsets_ns
    if len(offsets) < 2:
        return None
    if offsets[0] != offsets[1]:
        return "separate"
    delay = record.first_token_read_delay_ns
    if record.timing == "kernel" and delay is not None and delay <= max_read_delay_s * 1e9:
        return "server_coalesced"
    return "client_late"


def worker_health(row: dict[str, Any]) -> WorkerHealth:
    wall = row.get("wall_s")
    cpu = row["cpu_s"] / wall if wall else None
    waited = row.get("runqueue_wait_s")
    return WorkerHealth(
        worker=str(row["tag"]),
        cpu_fraction=cpu,
        runqueue_wait_fraction=waited / wall if waited is not None and wall else None,
        loop_lag_p99_s=row.get("loop_lag_p99_s"),
        loop_lag_max_s=row.get("loop_lag_max_s"),
    )


def _starved(worker: WorkerHealth) -> bool:
    """The process waited on a run queue longer than it ran: the machine, not its own work, held it up."""
    return (
        worker.runqueue_wait_fraction is not None
        and worker.cpu_fraction is not None
        and worker.runqueue_wait_fraction > worker.cpu_fraction
    )


def _why(worker: WorkerHealth) -> str:
    cpu = f"{worker.cpu_fraction:.0%} CPU" if worker.cpu_fraction is not None else "CPU unknown"
    wait = (
        f", waited {worker.runqueue_wait_fraction:.0%} of the time for a CPU"
        if worker.runqueue_wait_fraction is not None
        else ""
    )
    return f"{worker.worker}: {cpu}{wait}"


def _generator_party(workers: Sequence[WorkerHealth]) -> tuple[Party, str]:
    starved = [w for w in workers if _starved(w)]
    if starved:
        return "machine", "; ".join(_why(w) for w in starved)
    return "client", "; ".join(_why(w) for w in workers) or "no generator health recorded"


def _invalid(rule: str, party: Party, evidence: str) -> Finding:
    """A finding that makes the stage's figures untrustworthy."""
    return Finding(rule=rule, party=party, invalid=True, evidence=evidence)


def _p99_over(
    rule: str, what: str, p99: float | None, limit_s: float, *, party: Party, why: str
) -> list[Finding]:
    """An invalid finding when a delay's p99 (seconds) exceeds its limit, else none."""
    if p99 is None or p99 <= limit_s:
        return []
    return [_invalid(rule, party, f"{what} p99 {p99 * 1e3:.1f} ms > {limit_s * 1e3:g} ms ({why})")]


def judge(  # noqa: PLR0917 - one call site (summary), every input is a distinct piece of evidence
    timing: Timing,
    schedule_lag: Distribution,
    first_reads: Sequence[FirstRead],
    missing_usage: int,
    ok: int,
    health: Sequence[dict[str, Any]],
    limits: Generator,
) -> Validity:
    workers = [worker_health(row) for row in health]
    party, context = _generator_party(workers)
    findings = _p99_over(
        "read_delay",
        "first-token read delay",
        timing.read_delay_s.p99,
        limits.max_read_delay_s,
        party=party,
        why=context,
    )
    late = sum(kind == "client_late" for kind in first_reads)
    bounded = timing.ttft_upper_bound_fraction
    if bounded is not None and bounded > limits.max_ttft_upper_bound_fraction:
        findings.append(
            _invalid(
                "ttft_upper_bound",
                party,
                f"{late} of {ok} first tokens ({bounded:.1%} > "
                f"{limits.max_ttft_upper_bound_fraction:.0%}) shared a read with the second and that "
                f"read came over {limits.max_read_delay_s * 1e3:g} ms after the bytes arrived (or had no "
                f"kernel stamp): TTFT only an upper bound ({context})",
            )
        )
    findings += _p99_over(
        "schedule_lag", "schedule lag", schedule_lag.p99, limits.max_schedule_lag_s, party=party, why=context
    )
    for worker in workers:
        if worker.cpu_fraction is not None and worker.cpu_fraction > limits.max_cpu_fraction:
            findings.append(
                _invalid(
                    "generator_cpu",
                    "client",
                    f"{worker.worker} used {worker.cpu_fraction:.0%} of a core "
                    f"(> {limits.max_cpu_fraction:.0%})",
                )
            )
        findings += _p99_over(
            "loop_lag",
            f"{worker.worker} loop lag",
            worker.loop_lag_p99_s,
            limits.max_loop_lag_s,
            party="machine" if _starved(worker) else "client",
            why=_why(worker),
        )
    coalesced = timing.first_read_server_coalesced_fraction
    if coalesced:
        per_write = f"{timing.tokens_per_write:.2f}" if timing.tokens_per_write is not None else "unknown"
        findings.append(
            Finding(
                rule="server_coalesced_first_write",
                party="server",
                invalid=False,
                evidence=f"{coalesced:.1%} of first tokens arrived in one network write with the next "
                f"and were read promptly (delay <= {limits.max_read_delay_s * 1e3:g} ms): TTFT exact; "
                f"{per_write} tokens per write, ITL reflects the server's write pattern",
            )
        )
    if missing_usage:
        findings.append(
            Finding(
                rule="missing_usage",
                party="server",
                invalid=False,
                evidence=f"{missing_usage} of {ok} ok replies carried no usage: their tokens are not counted",
            )
        )
    reasons = [f"{f.party}: {f.evidence}" for f in findings if f.invalid]
    return Validity(valid=not reasons, invalid_reasons=reasons, findings=findings, workers=workers)
