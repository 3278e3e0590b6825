"""The space and proxy contracts (`nasfleet.testing.check_space`, `check_proxy`): every built-in passes,
and a broken plug-in is caught with every rule it breaks listed."""

from __future__ import annotations

import random

import pytest
from torch import nn

import nasfleet.proxies  # noqa: F401 - importing the package registers every built-in proxy
from nasfleet.proxies.base import PROXIES, Proxy
from nasfleet.proxies.probe import Probe
from nasfleet.spaces import SPACES, Cost, Genome, InputShape, NB201Space, get_space
from nasfleet.testing import ContractError, check_proxy, check_space, proxy_checks, space_checks

# linear_regions counts the distinct activation patterns of the batch, which saturates at the check's
# batch of 8: every network scores 8.0 there (it tells networks apart on the batch of 64 it is run on).
SATURATES_ON_SMALL_BATCHES = {"linear_regions": ("check_discriminates",)}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_builtin_space_follows_the_contract(name: str) -> None:
    check_space(get_space(name))


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_builtin_proxy_follows_the_contract_on_nb201(name: str) -> None:
    check_proxy(PROXIES[name], spaces=[NB201Space()], skip=SATURATES_ON_SMALL_BATCHES.get(name, ()))


@pytest.mark.parametrize("name", ["fg_fi", "synflow"])
def test_proxies_follow_the_contract_on_every_default_space(name: str) -> None:
    check_proxy(PROXIES[name])


class MiscountedSpace(NB201Space):
    """Off by one parameter, and its decode accepts garbage."""

    name = "miscounted"

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        cost = super().cost(arch, num_classes, input_shape)
        return Cost(cost.params + 1, cost.flops)

    def decode(self, text: str) -> Genome:
        try:
            return super().decode(text)
        except ValueError:
            return self.sample(__import__("numpy").random.default_rng(0))


def test_check_space_lists_every_broken_rule() -> None:
    with pytest.raises(ContractError) as caught:
        check_space(MiscountedSpace())
    report = str(caught.value)
    assert report.startswith("2 contract check(s) failed")
    assert "miscounted-strings: ContractError: decode('') must raise ArchitectureError" in report
    assert "miscounted-cost: ContractError: cost(" in report and "must equal the built network's" in report


class NoisyProxy(Proxy):
    """Random values, claims to need no labels but fails without them, and scales the weights."""

    name = "noisy"
    revision = 0

    def compute(self, probe: Probe) -> float:
        if probe.batch.labels is None:
            raise ValueError("no labels")
        for module in probe.network.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data.mul_(2.0)
        return random.random()


def test_check_proxy_lists_every_broken_rule() -> None:
    with pytest.raises(ContractError) as caught:
        check_proxy(NoisyProxy, spaces=[NB201Space()])
    report = str(caught.value)
    assert report.startswith("4 contract check(s) failed"), report
    assert "noisy-declaration: ContractError: revision must be an int >= 1, but got 0" in report
    assert "noisy-values: ContractError:" in report and "gave" in report and "and then" in report
    assert "noisy-labels: ProxyError:" in report and "no labels" in report
    assert "noisy-weights_unchanged: ContractError:" in report and "changed the weights of" in report


class ConstantProxy(Proxy):
    name = "constant"

    def compute(self, probe: Probe) -> float:
        return 1.0


def test_a_proxy_that_ties_every_network_is_caught_and_the_check_can_be_skipped() -> None:
    with pytest.raises(ContractError, match=r"constant-discriminates: .* tells none apart"):
        check_proxy(ConstantProxy, spaces=[NB201Space()])
    check_proxy(ConstantProxy, spaces=[NB201Space()], skip=["check_discriminates"])


def test_unknown_skips_are_refused() -> None:
    with pytest.raises(ValueError, match="skip must name checks among"):
        proxy_checks(ConstantProxy, skip=["check_nothing"])
    with pytest.raises(ValueError, match="skip must name checks among"):
        space_checks(NB201Space(), skip=["check_nothing"])
