"""The defaults and finite bounds that several boundaries share (CLI options, HTTP schemas, the service).

This module imports nothing, so the command line can build its options (and answer ``--help``) without
loading torch, Celery, SQLAlchemy or pydantic. The modules that enforce a bound import it from here.
"""

from __future__ import annotations

MAX_BUDGET = 1_000_000  # evaluations of one search
MAX_SEED = 2**31 - 1  # a user-given search or scoring seed
MAX_COUNT = 10**15  # max_params, max_flops
MAX_BATCH_SIZE = 4096  # a probe mini-batch
MIN_SAMPLE = 3  # the fewest archs one correlation-benchmark sample may draw
MAX_REPEATS = 100  # seeded samples of one correlation benchmark
MAX_EPOCHS = 1000  # of one local training: asked for, and done
DEVICES = ("cpu", "cuda")  # where proxies are computed
DEFAULT_AGGREGATE = "aznas_meco_fi"  # the default scorer, chosen in experiments/correlation/default_scorer.py

DEFAULT_REGISTRY_URL = "sqlite:///nasfleet-registry.db"  # a file in the current directory
DEFAULT_BROKER_URL = "sqlite:///nasfleet-broker.db"  # the embedded broker of serve, orchestrate, worker
DEFAULT_QUEUE = ""  # the deployment's queue: see `nasfleet.server.service.celery_app.resolve_queue`
SHARED_BASELINE_ROLE = "shared-baseline"  # a job's options["role"]: a round's one-size-fits-all search
