"""Simulated devices for the service studies (``scaling/``, ``faults/``): seeded data characteristics.

A runner imports this module after putting ``experiments/`` on ``sys.path`` (each runs as a script from
its own folder). nasfleet is imported inside the function, so a harness that keeps nasfleet out of its
own process until it submits jobs still does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nasfleet.protocol.messages import DataCharacteristics


def device_characteristics(
    seed: int, shape: tuple[int, int, int], classes: int = 10, rank: int = 2
) -> DataCharacteristics:
    """A labeled device's characteristics with rank-*rank* sketches, as a real device sends them, drawn
    from *seed* (ε = 4, δ = 1e-5)."""
    from nasfleet.protocol.messages import DataCharacteristics

    dim = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    histogram = tuple(int(v) for v in rng.integers(20, 80, classes))
    means = (rng.standard_normal((classes, dim)) * 0.5).astype(np.float32)
    bases = (rng.standard_normal((classes, rank, dim)) * 0.3).astype(np.float32)
    return DataCharacteristics(shape, classes, sum(histogram), histogram, True, means, bases, 4.0, 1e-5)
