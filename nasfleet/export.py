"""SubNets ready to deploy: a network of a search space as an ONNX or TorchScript file.

The file holds a freshly initialised network of the arch (the one `nasfleet.build_subnet` builds), in
eval mode, with a dynamic batch dimension; its input is named ``input`` (``(batch, C, H, W)``, float32)
and its output ``logits`` (``(batch, num_classes)``). What it is travels inside it: the space, its
options, the canonical arch, the class count and the input shape, as ONNX ``metadata_props`` or as the
TorchScript extra file ``nasfleet.json`` (keys ``nasfleet.space``, ``nasfleet.arch``, ...).

Exports are reproducible: the weights are drawn from the fixed seed `INIT_SEED` (the caller's torch
random state is left as it was), so equal arguments give the same network, and ONNX files byte for byte
(a TorchScript archive holds a random serialization id and torch's name counters, so its bytes differ).

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``). The torch.export-based one
(torch's default since 2.9) gave the same outputs but took 2-8 s per network here against 0.1-1 s, printed
progress lines, and wrote the weights of an MBV2 network to a second file. The TorchScript-based
exporter needs only the ``onnx`` package (``pip install 'nasfleet[export]'``).

torch and onnx are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INIT_SEED = 0
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXTRA_FILE = "nasfleet.json"
INSTALL_HINT = "pip install 'nasfleet[export]' (or: pip install onnx onnxscript onnxruntime)"


class ExportDependencyError(ImportError):
    """A package the export needs is not installed; the message says what to install."""


def export_subnet(
    space: str,
    arch: str,
    path: str | os.PathLike[str],
    *,
    format: str = "onnx",
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    space_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``arch`` of ``space`` as a runnable model file at ``path``; returns the path.

    The file is replaced atomically (a temporary file in the same directory, then a rename), so a
    reader sees the old file or the whole new one, and a failed export leaves nothing behind. Bad input
    raises `ValueError` naming the argument; a missing ``onnx`` package `ExportDependencyError`.
    """
    target = Path(path)
    if target.exists() and not target.is_file():
        raise ValueError(f"path must be a regular file or a new one, but {str(target)!r} is not")
    data = export_bytes(space, arch, format=format, num_classes=num_classes, input_shape=input_shape,
                        space_options=space_options)  # fmt: skip
    _replace_atomically(target, data)
    return target


def export_bytes(
    space: str,
    arch: str,
    *,
    format: str = "onnx",
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    space_options: Mapping[str, Any] | None = None,
) -> bytes:
    """The model file `export_subnet` writes, as bytes (for the HTTP API and standard output)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, but got {format!r}")
    if format == "onnx":
        _require_onnx()
    network, metadata = _network(space, arch, num_classes, input_shape, space_options)
    example = _example_input(metadata)
    with warnings.catch_warnings():  # torch warns that both exporters are deprecated; they work in 2.13
        warnings.simplefilter("ignore")
        if format == "onnx":
            return _onnx_bytes(network, example, metadata)
        return _torchscript_bytes(network, example, metadata)


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``nasfleet.*`` metadata of an exported file (ONNX or TorchScript), as strings."""
    if data[:2] == b"PK":  # TorchScript files are zip archives
        import torch

        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(io.BytesIO(data), _extra_files=extra)  # type: ignore[no-untyped-call]
        loaded: dict[str, str] = json.loads(extra[EXTRA_FILE])
        return loaded
    _require_onnx()
    import onnx

    model = onnx.load_from_string(data)
    return {prop.key: prop.value for prop in model.metadata_props if prop.key.startswith("nasfleet.")}


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportDependencyError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None


def _network(
    space: str,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    space_options: Mapping[str, Any] | None,
) -> tuple[nn.Module, dict[str, str]]:
    """The seeded network (as `nasfleet.build_subnet` builds it) in eval mode, and its metadata."""
    import torch

    from nasfleet.spaces import get_space
    from nasfleet.spaces.base import check_input_shape

    search_space = get_space(space, space_options)
    genome = search_space.decode(arch)
    shape = check_input_shape(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        network = search_space.build(genome, num_classes, shape).eval()
    metadata = {
        "nasfleet.space": space,
        "nasfleet.space_options": json.dumps(dict(space_options or {}), sort_keys=True),
        "nasfleet.arch": search_space.encode(genome),
        "nasfleet.num_classes": str(num_classes),
        "nasfleet.input_shape": ",".join(str(v) for v in shape),
        "nasfleet.input_name": INPUT_NAME,
        "nasfleet.output_name": OUTPUT_NAME,
        "nasfleet.init_seed": str(INIT_SEED),
    }
    return network, metadata


def _example_input(metadata: Mapping[str, str]) -> Any:
    import torch

    shape = [int(v) for v in metadata["nasfleet.input_shape"].split(",")]
    generator = torch.Generator().manual_seed(INIT_SEED)
    return torch.randn(2, *shape, generator=generator)  # batch 2: no size-1 dimension to specialise on


def _onnx_bytes(network: nn.Module, example: Any, metadata: Mapping[str, str]) -> bytes:
    import onnx
    import torch

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with tempfile.TemporaryDirectory(prefix="nasfleet-export-") as directory, torch.no_grad():
        path = Path(directory) / "model.onnx"  # torch.onnx.export takes a path, not a buffer
        torch.onnx.export(
            network, (example,), path, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
        )  # fmt: skip
        model = onnx.load_from_string(path.read_bytes())
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "nasfleet"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _torchscript_bytes(network: nn.Module, example: Any, metadata: Mapping[str, str]) -> bytes:
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(network, example)  # type: ignore[no-untyped-call]
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(dict(metadata), sort_keys=True)})
    return buffer.getvalue()


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write *data* to a new file beside *path* (0o666 less the umask), sync it, rename it over *path*."""
    temporary = path.parent / f".{path.name[:200]}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
