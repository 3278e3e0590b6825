"""A round's outcomes handed from the ServerApp's process to ``nasfleet simulate``'s.

``nasfleet simulate`` runs the ServerApp through ``flwr run`` (`nasfleet.server.federation.local_run`), so
the round's `DeviceOutcome` objects live in a ``flwr-serverapp`` process that Flower starts. The round
leaves them in the run config's ``outcomes-file``: a pickle, written whole or not at all, in a private
temporary directory the simulate command created and reads back (no other process writes there, so
unpickling it trusts only this machine's own ServerApp).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

from nasfleet.server.federation.round import DeviceOutcome


def save_outcomes(outcomes: Sequence[DeviceOutcome], path: str) -> None:
    """Write *outcomes* to *path* atomically (a temporary file beside it, then a rename)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(list(outcomes)))
    os.replace(partial, target)


def load_outcomes(path: Path) -> list[DeviceOutcome]:
    """The outcomes `save_outcomes` wrote to *path*."""
    outcomes = pickle.loads(path.read_bytes())
    if not (isinstance(outcomes, list) and all(isinstance(o, DeviceOutcome) for o in outcomes)):
        raise ValueError(f"{path} must hold a list of DeviceOutcome, but holds {type(outcomes).__name__}")
    return outcomes
