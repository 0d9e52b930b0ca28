"""PromQL building blocks shared by recording rules and dashboard panels, and Grafana-variable expansion.

Dashboards filter with template variables ``$run``, ``$model`` and ``$language``; which of them apply to
a client metric follows from the labels ``loadgen.metric_names`` declares for it, so a panel never
filters on a label its metric lacks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from loadgen import metric_names as client
from observability.dashboards import server_metric_names as server

# Grafana template variables and the client label each one filters.
VARIABLE_LABELS: dict[str, str] = {"run": "run_id", "model": "model", "language": "language"}
LOADGEN_JOB = client.JOB_NAME


def selector(matchers: Mapping[str, str], regex: bool = True) -> str:
    """``{a=~"x",b=~"y"}`` (or ``=`` when ``regex`` is false); empty mapping gives ``""``."""
    if not matchers:
        return ""
    operator = "=~" if regex else "="
    return "{" + ",".join(f'{label}{operator}"{value}"' for label, value in matchers.items()) + "}"


def client_filter(spec: client.MetricSpec, variables: Iterable[str] = ("run", "model", "language")) -> str:
    """Matchers of the dashboard variables that apply to this client metric's labels."""
    matchers = {
        VARIABLE_LABELS[name]: f"${name}" for name in variables if VARIABLE_LABELS[name] in spec.labels
    }
    return selector(matchers)


def server_filter(model_variable: bool = True) -> str:
    return selector({server.MODEL_LABEL: "$model"}) if model_variable else ""


def deployment_filter() -> str:
    """Ray Serve series of the LLM deployments of the selected models."""
    return selector({"deployment": f"{server.DEPLOYMENT_PREFIX}($model)"})


def le_value(bound: float) -> str:
    """How a histogram bucket bound appears in the ``le`` label, as prometheus_client writes it."""
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return repr(float(bound))


def bucket_at_or_below(buckets: Iterable[float], threshold: float) -> float:
    """The largest bucket bound <= threshold: an SLO is counted at a bound the histogram has."""
    below = [b for b in buckets if b <= threshold + 1e-12]
    if not below:
        raise ValueError(f"threshold {threshold} is below the smallest histogram bucket")
    return max(below)


def histogram_quantile(q: float, bucket_series: str, by: Iterable[str], window: str, where: str = "") -> str:
    labels = ", ".join([*by, "le"])
    return f"histogram_quantile({q:g}, sum by ({labels}) (rate({bucket_series}{where}[{window}])))"


def rate_sum(series: str, by: Iterable[str], window: str, where: str = "") -> str:
    return f"sum by ({', '.join(by)}) (rate({series}{where}[{window}]))"


def quantile_suffix(q: float) -> str:
    """0.5 -> p50, 0.99 -> p99, 0.999 -> p99_9."""
    return "p" + f"{q * 100:g}".replace(".", "_")


_VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)")


def expand(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables (``$x``, ``${x}``, ``${x:fmt}``) with concrete values, as Grafana would.

    Unknown variables raise KeyError, so a panel cannot reference a variable the test did not define.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name]

    return _VARIABLE.sub(replace, expr)
