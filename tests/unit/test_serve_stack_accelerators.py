"""serve up's check that every GPU model's accelerator type exists on the cluster it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.catalog import load_catalog
from serving.stack.stack import ServeError, check_accelerators

REPO = Path(__file__).resolve().parents[2]


def test_a_gpu_type_the_cluster_lacks_is_a_one_line_error() -> None:
    catalog = load_catalog(REPO / "deploy/device/models/h200-dummy.yaml")
    h100 = {"CPU": 16.0, "GPU": 1.0, "accelerator_type:H100": 1.0}
    with pytest.raises(ServeError, match=r"asks for accelerator 'H200', but this cluster has H100") as info:
        check_accelerators(catalog, h100)
    assert "\n" not in str(info.value)
    check_accelerators(catalog, {**h100, "accelerator_type:H200": 1.0})  # present: no error
    with pytest.raises(ServeError, match="has no GPU type"):
        check_accelerators(catalog, {"CPU": 2.0})
    cpu = load_catalog(REPO / "deploy/models/embedded-cpu.yaml")
    check_accelerators(cpu, {"CPU": 2.0})  # CPU models need no accelerator type
