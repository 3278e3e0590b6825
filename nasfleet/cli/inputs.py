"""What the commands read, named by their options: a space, an arch file, probe data, proxies, a device.

Each is checked here, at the boundary: a bad value is a usage error naming the option, the rule and the
value, raised before any long work starts. The heavy modules (torch) are imported inside the functions,
so that importing the command line stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from nasfleet.data.datasets import Dataset
    from nasfleet.proxies.probe import ProbeBatch
    from nasfleet.spaces import Genome, InputShape, SearchSpace


def space_named(name: str) -> SearchSpace:
    """The search space ``--space`` names."""
    from nasfleet.spaces import get_space

    try:
        return get_space(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--space") from None


def parse_input_shape(text: str) -> InputShape:
    """Parse ``C,H,W`` into a validated input shape."""
    from nasfleet.spaces.base import check_input_shape

    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"must be three integers C,H,W, but got {text!r}", param_hint="--input-shape"
        ) from None
    try:
        return check_input_shape(values, num_classes=2)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--input-shape") from None


def read_archs(space: SearchSpace, path: Path) -> list[tuple[str, Genome]]:
    """Arch strings of a file (one a line; blank lines and ``#`` comments skipped), validated."""
    from nasfleet.spaces import ArchitectureError

    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
    elif path.is_file():
        lines = path.read_text().splitlines()
    else:
        raise typer.BadParameter(f"no such file: {path}", param_hint="--archs")
    archs = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            archs.append((text, space.decode(text)))
        except ArchitectureError as error:
            raise typer.BadParameter(f"line {number}: {error}", param_hint="--archs") from None
    return archs


def expand_proxies(proxies: str, labeled: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The proxy and aggregate names ``--proxies`` asks for (an aggregate brings its input proxies)."""
    from nasfleet.proxies.base import ProxyError
    from nasfleet.proxies.engine import expand_names

    try:
        return expand_names(proxies, labeled)
    except ProxyError as error:
        raise typer.BadParameter(str(error), param_hint="--proxies") from None


def train_split(data: str) -> Dataset:
    """The train split of the dataset ``--data`` names."""
    from nasfleet.data.datasets import load_dataset

    try:
        return load_dataset(data, "train")
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error), param_hint="--data") from None


NOISE = "noise"
DEFAULT_NOISE_SOURCE = "cifar10"


def noise_source(data: str) -> str | None:
    """The dataset spec whose image shape and labels a ``noise[:SPEC]`` probe takes (``noise`` alone:
    `DEFAULT_NOISE_SOURCE`); None when ``data`` names real images."""
    if data == NOISE:
        return DEFAULT_NOISE_SOURCE
    return data.removeprefix(f"{NOISE}:") if data.startswith(f"{NOISE}:") else None


def probe_batch(
    data: str, batch_size: int, seed: int, labeled: bool, dataset: Dataset | None = None
) -> ProbeBatch:
    """The seeded probe mini-batch of the train split of ``data`` (``dataset``, if already loaded).

    ``noise[:SPEC]`` gives Gaussian noise instead, AZ-NAS's random inputs: ``batch_size`` inputs of
    i.i.d. N(0, 1) values in the shape of SPEC's images, built as the server's generic-prior batch
    (`nasfleet.search.probe.synthetic_probe_batch` of SPEC's characteristics without sketches), so the
    labels are SPEC's class histogram allocated in proportion to the batch and shuffled with ``seed``.
    """
    from nasfleet.proxies.probe import ProbeBatch

    source = noise_source(data)
    dataset = train_split(source or data) if dataset is None else dataset
    try:
        if source is not None:
            return _noise_batch(dataset, batch_size, seed, labeled)
        return ProbeBatch.from_dataset(dataset, batch_size, seed, labeled)
    except ValueError as error:
        raise typer.BadParameter(f"{error} (samples in {data!r})", param_hint="--batch-size") from None


def _noise_batch(dataset: Dataset, batch_size: int, seed: int, labeled: bool) -> ProbeBatch:
    from nasfleet.clients.characteristics import extract_characteristics
    from nasfleet.search.probe import synthetic_probe_batch

    characteristics = extract_characteristics(dataset, labeled=labeled, seed=seed, sketches=False)
    return synthetic_probe_batch(characteristics, batch_size, seed)


def checked_device(device: str) -> str:
    """``--device``, if this machine has it."""
    from nasfleet.proxies.engine import check_device

    try:
        check_device(device)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
    return device
