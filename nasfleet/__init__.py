"""nasfleet: federated, multi-tenant, training-free neural architecture search.

The package's own namespace is the Python API for people: `build_subnet` turns a search's result into a
network. It loads torch when called, and never Celery, SQLAlchemy or the HTTP stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"
__all__ = ["__version__", "build_subnet"]


def build_subnet(
    space: str,
    arch: str | Sequence[int],
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    space_options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A freshly initialised network of ``arch`` (a canonical arch string or a genome) in ``space``.

    ``space_options`` are those a job stores with its result (for example a narrow NB201's
    ``channels``). Bad input raises `ValueError` naming what is wrong.
    """
    from nasfleet.spaces import get_space
    from nasfleet.spaces.base import check_input_shape

    search_space = get_space(space, space_options)
    genome = search_space.decode(arch) if isinstance(arch, str) else search_space.validate(arch)
    return search_space.build(genome, num_classes, check_input_shape(input_shape, num_classes))
