"""The device's Flower ``ClientApp``: answers ``query`` and ``train`` messages.

A device's setup (which local data it holds, its tier, its privacy budget) is read from Flower's
configuration, most specific first: the SuperNode's ``node_config`` (``--node-config`` on the
deployment engine; ``partition-id``/``num-partitions`` in simulation), then the run config
(``[tool.flwr.app.config]``), then the defaults given to `make_client_app`. Keys are kebab-case.

* ``query.characteristics`` -> ``identity``, ``characteristics`` (+ arrays), ``constraints``, ``profile``
  (with the device's per-layer latency table for the run's ``space``: `measured_profile`);
* ``train.subnet`` with a ``subnet`` assignment -> ``report``.

A malformed message or a failing handler is answered with a Flower ``Error`` reply naming the problem;
the ClientApp itself never crashes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from nasfleet.clients.characteristics import DEFAULT_EPSILON, DEFAULT_RANK, extract_characteristics
from nasfleet.clients.device import DEVICE_TIERS, DeviceTier, assign_tiers, calibrate_profile
from nasfleet.clients.tiers import parse_tier_limits
from nasfleet.clients.training import train_subnet
from nasfleet.data.datasets import Dataset, load_dataset
from nasfleet.data.partition import device_partition
from nasfleet.protocol.messages import DeviceIdentity, DeviceProfile, MessageError, SubNetAssignment, require
from nasfleet.protocol.wire import ConfigValue, pack, unpack
from nasfleet.spaces import InputShape, get_space

ERROR_BAD_MESSAGE = 400
ERROR_HANDLER_FAILED = 500
#: Seconds a device spends at most sampling archs for its layer table of one space (`calibrate_table`'s
#: ``max_seconds``; the FLOPs fit and the table's fixed costs come on top, about 1-2 s).
TABLE_SECONDS = 10.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSetup:
    """What one simulated or deployed device is: its data partition, tier and privacy settings.

    ``tier_limits`` replaces limits of the built-in tiers (`nasfleet.clients.tiers`), e.g.
    ``"micro:params=150k,flops=20M"``; "" keeps them all. ``space`` is the run's search space (the run
    config's ``space``, which the server searches): the device measures its latency table for it.
    """

    partition_id: int = 0
    num_partitions: int = 1
    dataset: str = "digits"
    partition: str = "dirichlet:0.5"
    seed: int = 0
    tenant: str = "default"
    tier: str = ""
    tier_limits: str = ""
    epsilon: float = DEFAULT_EPSILON
    sketch_rank: int = DEFAULT_RANK
    sketches: bool = True
    labeled: bool = True
    space: str = "nb201"

    @classmethod
    def from_config(cls, *configs: Mapping[str, ConfigValue]) -> DeviceSetup:
        """Merge configs (earlier ones win) into a checked setup; unknown keys are ignored."""
        values: dict[str, ConfigValue] = {}
        for config in reversed(configs):
            values.update({key.replace("-", "_"): value for key, value in config.items()})
        known = {f.name: f.type for f in fields(cls)}
        setup = cls(**{k: v for k, v in values.items() if k in known})  # type: ignore[arg-type]
        setup.check()
        return setup

    def check(self) -> None:
        ints = all(isinstance(getattr(self, n), int) for n in ("partition_id", "num_partitions", "seed"))
        require(
            ints, "partition-id/num-partitions/seed", "integers", (self.partition_id, self.num_partitions)
        )
        ok = 0 <= self.partition_id < self.num_partitions
        require(ok, "partition-id", f"in [0, num-partitions={self.num_partitions})", self.partition_id)
        eps_ok = isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon) and self.epsilon > 0
        require(eps_ok, "epsilon", "a positive finite number", self.epsilon)
        names = [t.name for t in DEVICE_TIERS]
        require(self.tier in ["", *names], "tier", f"one of {names} (or empty to assign)", self.tier)
        require(isinstance(self.tier_limits, str), "tier-limits", "a string", self.tier_limits)
        parse_tier_limits(self.tier_limits, names)
        require(isinstance(self.space, str), "space", "a space name", self.space)
        get_space(self.space)  # a ValueError naming the known spaces (or why a plug-in's is broken)

    @property
    def device(self) -> str:
        return f"device-{self.partition_id}"

    def device_tier(self) -> DeviceTier:
        """The device's tier (given, else dealt by `assign_tiers`), with the limits ``tier_limits`` sets."""
        if self.tier:
            tier = next(t for t in DEVICE_TIERS if t.name == self.tier)
        else:
            tier = assign_tiers(self.num_partitions, self.seed)[self.partition_id]
        limits = parse_tier_limits(self.tier_limits, [t.name for t in DEVICE_TIERS]).get(tier.name, {})
        return replace(tier, constraints=replace(tier.constraints, **limits))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def local_dataset(setup: DeviceSetup) -> Dataset:
    """The device's local partition of the training split (cached per process: loading is not free)."""
    data = load_dataset(setup.dataset)
    parts = device_partition(data.labels, setup.partition, setup.num_partitions, setup.seed)
    return data.subset(parts[setup.partition_id])


def answer_query(setup: DeviceSetup) -> RecordDict:
    """Characteristics (with DP sketches unless opted out), constraints and the calibrated profile."""
    data, tier = local_dataset(setup), setup.device_tier()
    characteristics = extract_characteristics(
        data,
        labeled=setup.labeled,
        epsilon=setup.epsilon,
        rank=setup.sketch_rank,
        seed=setup.seed * 1000 + setup.partition_id,
        sketches=setup.sketches,
    )
    profile = measured_profile(
        setup.device, tier, data.input_shape, data.num_classes, setup.seed, setup.space
    )
    content = pack(RecordDict(), "identity", DeviceIdentity(setup.tenant, setup.device))
    pack(content, "characteristics", characteristics)
    pack(content, "constraints", tier.constraints_for(data.input_shape))
    return pack(content, "profile", profile)


@functools.lru_cache(maxsize=32)
def measured_profile(
    device: str, tier: DeviceTier, input_shape: InputShape, num_classes: int, seed: int, space: str
) -> DeviceProfile:
    """The device's calibrated profile with its layer table for ``space`` at its data's shape: timed once
    per process for each device and space (a later query answers from the cache), the table's sampling
    bounded by `TABLE_SECONDS`."""
    return calibrate_profile(
        tier, input_shape, num_classes, seed=seed, spaces=[get_space(space)], table_seconds=TABLE_SECONDS
    )


def answer_train(setup: DeviceSetup, content: RecordDict) -> RecordDict:
    """Train the assigned SubNet on the local data and report accuracy, loss, time and latency."""
    assignment = unpack(content, "subnet", SubNetAssignment)
    report = train_subnet(assignment, local_dataset(setup), slowdown=setup.device_tier().slowdown)
    return pack(RecordDict(), "report", report)


def _handle(
    message: Message, context: Context, defaults: Mapping[str, ConfigValue], answer: Callable[..., RecordDict]
) -> Message:
    try:
        setup = DeviceSetup.from_config(context.node_config, context.run_config, defaults)
        torch.set_num_threads(1)
        content = answer(setup) if answer is answer_query else answer(setup, message.content)
        return Message(content, reply_to=message)
    except (MessageError, ValueError) as error:
        log.warning("rejected %s: %s", message.metadata.message_type, error)
        return Message(Error(ERROR_BAD_MESSAGE, str(error)), reply_to=message)
    except Exception as error:  # a failing device must answer, not crash: the server records its error
        log.exception("handler for %s failed", message.metadata.message_type)
        return Message(Error(ERROR_HANDLER_FAILED, f"{type(error).__name__}: {error}"), reply_to=message)


def make_client_app(defaults: Mapping[str, ConfigValue] | None = None) -> ClientApp:
    """A ClientApp whose device setup falls back to ``defaults`` for keys Flower's config does not set."""
    base = dict(defaults or {})
    client = ClientApp()

    @client.query("characteristics")
    def query(message: Message, context: Context) -> Message:
        return _handle(message, context, base, answer_query)

    @client.train("subnet")
    def train(message: Message, context: Context) -> Message:
        return _handle(message, context, base, answer_train)

    return client


#: The app the deployment engine loads (``nasfleet.clients.app:app``): setup from Flower's config only.
app = make_client_app()
