"""nasfleet: federated, multi-tenant, training-free neural architecture search.

The package's own namespace is the Python API for people: `build_subnet` turns a search's result into a
network, `export_subnet` (from `nasfleet.export`, loaded on first use) into an ONNX or TorchScript file.
They load torch when called, and never Celery, SQLAlchemy or the HTTP stack. `TenantClient` (with
`ApiError`, `JobError`, `Job`, `Result`, `Report`) is the client of the tenant HTTP API, from
`nasfleet.client`, loaded on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from nasfleet.client import ApiError, Job, JobError, Report, Result, TenantClient
    from nasfleet.export import export_subnet

__version__ = "0.1.0"
__all__ = ["ApiError", "Job", "JobError", "Report", "Result", "TenantClient", "__version__", "build_subnet",
           "export_subnet"]  # fmt: skip
CLIENT_NAMES = ("ApiError", "Job", "JobError", "Report", "Result", "TenantClient")


def __getattr__(name: str) -> Any:
    """The HTTP client's names and `export_subnet`, imported when first asked for."""
    if name == "export_subnet":
        from nasfleet.export import export_subnet

        return export_subnet
    if name in CLIENT_NAMES:
        from nasfleet import client

        return getattr(client, name)
    raise AttributeError(f"module 'nasfleet' has no attribute {name!r}")


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
