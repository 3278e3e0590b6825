"""``nasfleet simulate --tier-limits``: checked at the command line with one-line errors, and applied by
each device (run config key ``tier-limits``) to the limits it sends."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.clients.app import DeviceSetup, answer_query
from nasfleet.clients.device import get_tier
from nasfleet.protocol.messages import ResourceConstraints
from nasfleet.protocol.wire import unpack


def _message(output: str) -> str:
    """The usage error as one line (typer draws it in a box, wrapped at the terminal's width)."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nano:params=100k", "tier must be one of ['micro', 'mobile', 'edge-gpu'], but got 'nano'"),
        ("micro:params=1.5", "params must be a whole number (suffix k, M or G allowed) in [1, 1e+15], "
                             "but got '1.5'"),
        ("micro:size=3", "each setting must be KEY=VALUE with KEY one of ['params', 'flops', 'latency', "
                         "'memory'], but got 'size=3' in 'micro:size=3'"),
        ("micro", "must be TIER:KEY=VALUE[,KEY=VALUE...] (keys: params, flops, latency, memory), "
                  "but got 'micro'"),
        ("micro:latency=0", "latency must be a number (suffix k, M or G allowed) in [0.001, 1e+07], "
                            "but got '0'"),
    ],
)  # fmt: skip
def test_bad_tier_limits_are_a_usage_error_naming_the_option_before_anything_starts(
    given: str, expected: str
) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--tier-limits", "mobile:flops=30M", "--tier-limits", given]
    )

    assert result.exit_code == 2
    assert f"Invalid value for --tier-limits: {expected}" in _message(result.output), result.output


def test_a_tier_given_twice_is_refused_across_options() -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--tier-limits", "micro:params=1k", "--tier-limits", "micro:flops=2M"]
    )

    assert result.exit_code == 2
    assert "each tier must be given once, but 'micro' is given again" in _message(result.output)


def test_a_device_sends_its_tiers_limits_as_the_run_config_replaces_them() -> None:
    # Prepare: the run config as `simulate` builds it, and a node config naming each device's tier
    run_config = {"dataset": "digits", "tier-limits": "micro:params=150k,flops=20M;edge-gpu:latency=10"}
    sent = {}
    # Execute
    for tier in ("micro", "mobile", "edge-gpu"):
        setup = DeviceSetup.from_config({"partition-id": 0, "num-partitions": 1, "tier": tier}, run_config)
        sent[tier] = unpack(answer_query(setup), "constraints", ResourceConstraints)
    # Assert: FLOPs are stated at 3x32x32 and scaled to digits' 1x8x8 (1/16), as the tiers' own
    builtin = {tier: get_tier(tier).constraints for tier in sent}
    assert sent["micro"] == ResourceConstraints(150_000, 1_250_000, builtin["micro"].max_latency_ms, 1.0)
    assert sent["mobile"] == get_tier("mobile").constraints_for((1, 8, 8)), (
        "a tier not named keeps its limits"
    )
    assert sent["edge-gpu"].max_latency_ms == 10.0
    assert sent["edge-gpu"].max_params == builtin["edge-gpu"].max_params


def test_a_device_refuses_bad_tier_limits_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"^flops must be a whole number .* but got '2x'$"):
        DeviceSetup.from_config({"tier-limits": "micro:flops=2x"})
