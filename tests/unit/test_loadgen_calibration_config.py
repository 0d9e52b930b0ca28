"""The calibration server's command line maps onto ServerConfig, option by field."""

from __future__ import annotations

import pytest

from loadgen.calibration.config import ServerConfig, parse_args


def test_no_options_give_the_config_defaults() -> None:
    assert parse_args([]) == ServerConfig()


def test_every_option_reaches_its_field() -> None:
    config = parse_args(
        [
            "--host=127.0.0.2",
            "--port=0",
            "--ttft-ms=40",
            "--itl-ms=8",
            "--output-len=5",
            "--models=a,,b",
            "--token-text=x",
            "--fault=http500",
            "--die-after-s=1.5",
            "--request-log=r.log",
            "--timing-log=t.log",
            "--die-after-requests=3",
            "--realtime",
            "--capacity-tps=200",
        ]
    )
    assert config == ServerConfig(
        host="127.0.0.2",
        port=0,
        ttft_ms=40.0,
        itl_ms=8.0,
        output_len=5,
        models=("a", "b"),
        token_text="x",
        fault="http500",
        die_after_s=1.5,
        request_log="r.log",
        timing_log="t.log",
        die_after_requests=3,
        realtime=True,
        capacity_tps=200.0,
    )


def test_an_unknown_fault_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--fault=slow"])
