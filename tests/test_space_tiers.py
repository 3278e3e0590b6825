"""Every space usable on every tier: the cheapest arch of each space meets the tightest tier, and limits that
exclude a whole space are named with the space's cheapest arch and its cost (issue 16, item 4)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.clients.device import DEVICE_TIERS, get_tier
from nasfleet.search.limits import device_feasibility
from nasfleet.server.service.tasks import PAYLOAD_VERSION, ScoringSpec
from nasfleet.spaces import MBV2Space, SearchSpace, get_space
from nasfleet.strategies import Feasibility, InfeasibleSearchError, SearchLimits, get_strategy

LEGACY_MBV2 = MBV2Space(widths=(0.5, 0.75, 1.0), scale_head=False)  # revision 1's defaults
DIGITS, CIFAR = (1, 8, 8), (3, 32, 32)


@pytest.mark.parametrize("space_name", ["autoformer-edge", "coer", "mbv2", "nb201"])
@pytest.mark.parametrize("shape", [DIGITS, CIFAR])
def test_the_cheapest_arch_of_every_space_meets_every_tier(
    space_name: str, shape: tuple[int, int, int]
) -> None:
    space = get_space(space_name)
    cheapest = space.cheapest(10, shape)
    for tier in DEVICE_TIERS:
        feasible = device_feasibility(space, tier.constraints_for(shape), None, 10, shape)
        assert feasible(cheapest), (tier.name, feasible.describe(cheapest))


def test_the_cheapest_mbv2_arch_fits_the_micro_tier_and_the_legacy_one_did_not() -> None:
    micro = get_tier("micro").constraints_for(DIGITS)
    cheapest = MBV2Space().cheapest(10, DIGITS)

    assert MBV2Space().cost(cheapest, 10, DIGITS).params == 117_362 <= micro.max_params  # type: ignore[operator]
    assert device_feasibility(MBV2Space(), micro, None, 10, DIGITS)(cheapest)
    legacy = LEGACY_MBV2.cheapest(10, DIGITS)
    assert not device_feasibility(LEGACY_MBV2, micro, None, 10, DIGITS)(legacy)


def _first_ask(space: SearchSpace, limits: SearchLimits, shape: tuple[int, int, int]) -> str:
    strategy = get_strategy("random", space, seed=0, budget=2, feasible=Feasibility(space, limits, 10, shape))
    with pytest.raises(InfeasibleSearchError) as caught:
        strategy.ask(1)
    return str(caught.value)


def test_limits_that_exclude_the_whole_space_name_its_cheapest_arch_and_cost() -> None:
    micro = get_tier("micro").constraints_for(DIGITS)
    limits = SearchLimits(micro.max_params, micro.max_flops)

    message = _first_ask(LEGACY_MBV2, limits, DIGITS)

    assert message == (
        "no architecture of mbv2 meeting SearchLimits(max_params=200000, max_flops=1562500, "
        "max_latency_ms=None) exists: the limits exclude the whole space, whose cheapest arch is "
        "w0.5-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3 "
        "(546,770 params, 2,182,474 FLOPs at 10 classes, 1x8x8 inputs; "
        "breaks params > 200,000, FLOPs > 1,562,500)"
    )


def test_limits_that_leave_a_sliver_say_the_cheapest_arch_meets_them() -> None:
    message = _first_ask(MBV2Space(), SearchLimits(max_params=117_362), DIGITS)

    assert "was found in 1000 random samples, though the space's cheapest arch w0.25-d2,2,2" in message
    assert "(117,362 params, 479,210 FLOPs at 10 classes, 1x8x8 inputs) meets them" in message


def test_search_refuses_an_impossible_limit_naming_the_cheapest_arch(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    tiny = ["--data", "synthetic:32", "--batch-size", "4", "--budget", "4"]
    arguments = [
        "search",
        "--space",
        "mbv2",
        "--strategy",
        "random",
        "--max-params",
        "50000",
        "--out",
        str(out),
    ]
    arguments += tiny

    result = CliRunner().invoke(app, arguments)

    output = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
    assert result.exit_code == 2 and not out.exists(), output
    assert "the limits exclude the whole space, whose cheapest arch is w0.25-d2,2,2,2,2,2-" in output
    assert "(117,506 params, 1,499,690 FLOPs at 10 classes, 3x32x32 inputs; breaks params > 50,000)" in output


def test_cached_values_are_keyed_on_the_space_revision() -> None:
    def wire_hash(spec: ScoringSpec) -> str:
        key = json.dumps({"version": PAYLOAD_VERSION, **spec.to_wire()}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()

    mbv2 = ScoringSpec("mbv2", ("fg_fi",), 8, 0)
    nb201 = ScoringSpec("nb201", ("fg_fi",), 8, 0)

    assert MBV2Space.revision == 2 and nb201.digest() == wire_hash(nb201)  # revision 1: keys unchanged
    assert mbv2.digest() != wire_hash(mbv2)  # revision 2: values cached before the change are not reused
