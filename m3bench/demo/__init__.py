"""`m3bench demo`: the whole benchmark on the embedded default in one command."""

from m3bench.demo.run import Demo, demo_catalog
from m3bench.demo.settings import PRESETS, DemoSettings

__all__ = ["PRESETS", "Demo", "DemoSettings", "demo_catalog"]
