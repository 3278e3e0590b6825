"""A round's settings (`RoundConfig`), read from Flower's run config or given."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.protocol.messages import TrainConfig
from nasfleet.protocol.wire import ConfigValue
from nasfleet.server.federation.names import check_run_name
from nasfleet.server.service.jobs import JobOptions


@dataclass(frozen=True)
class RoundConfig:
    """The server's settings for one round; read from the run config (kebab-case keys) or given.

    ``broker`` "" runs the searches embedded (an SQLite broker, no server); a ``redis://`` or ``amqp://``
    URL runs them distributed, on ``nasfleet worker`` processes started elsewhere for that broker and
    ``registry`` (then a ``postgresql+psycopg://`` URL). ``workers`` is how many worker processes the round
    starts on the server itself: at least 1 embedded, 0 or more distributed.

    ``name`` names the run: its jobs are named after it and opened by name, so a rerun with the same
    name resumes them (`nasfleet.server.federation.names`), and its reports carry it. "" leaves the jobs
    unnamed (each run searches anew) and the reports without a run. A name is checked on construction:
    1-48 characters of [A-Za-z0-9_.-] (a `RegistryError` naming the field, the rule and the value).

    ``num_clients`` 0 is every node the federation has (a simulation federation's ``num-supernodes``).
    ``outcomes_file``, when set, is where the round leaves its outcomes for ``nasfleet simulate``, which
    runs the ServerApp in a process of Flower's (`nasfleet.server.federation.local_run`).
    """

    num_clients: int = 0
    rounds: int = 2
    space: str = "nb201"
    strategy: str = "evolution"
    budget: int = 24
    ask_size: int = 8
    probe_batch: int = 32
    seed: int = 0
    registry: str = DEFAULT_REGISTRY_URL
    train_epochs: int = 20
    train_patience: int = 0
    train_augment: bool = False
    train_batch_size: int = 32
    train_lr: float = 0.05
    train_max_seconds: float = 60.0
    node_wait: float = 60.0
    query_timeout: float = 120.0
    train_timeout: float = 600.0
    shared_baseline: bool = True
    broker: str = ""
    workers: int = 2
    name: str = ""
    outcomes_file: str = ""

    def __post_init__(self) -> None:
        if self.name != "":
            check_run_name(self.name)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, ConfigValue]) -> RoundConfig:
        known = {f.name for f in fields(cls)}
        values = {k.replace("-", "_"): v for k, v in run_config.items()}
        return cls(**{k: v for k, v in values.items() if k in known})  # type: ignore[arg-type]

    def to_run_config(self) -> dict[str, ConfigValue]:
        """The settings as run config keys (kebab-case), the inverse of `from_run_config`."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @property
    def job_options(self) -> JobOptions:
        """Every device's search: ``probe_batch`` synthetic samples, scored with ``seed``."""
        return JobOptions(ask_size=self.ask_size, batch_size=self.probe_batch, scoring_seed=self.seed)

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(
            self.train_epochs,
            self.train_batch_size,
            self.train_lr,
            self.train_max_seconds,
            seed=self.seed,
            patience=self.train_patience,
            augment=self.train_augment,
        )
