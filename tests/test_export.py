"""SubNets ready to deploy: ONNX and TorchScript files of `nasfleet.export`, through the Python API, the
real ``nasfleet export`` command (from an arch and from a finished job of a real SQLite registry) and the
real HTTP server (``GET /v1/jobs/{id}/export`` under uvicorn).

Each file is run (onnxruntime, ``torch.jit.load``) at batch 1 and 3 and compared with the PyTorch network
`nasfleet.build_subnet` builds from the export's documented seed. Networks are tiny: a narrow NB201 on
3x8x8 inputs, an MBV2 on 3x16x16.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import uvicorn
from service_support import OPTIONS, api_client, characteristics, free_port
from typer.testing import CliRunner

import nasfleet
from nasfleet.cli import app
from nasfleet.export import INIT_SEED, export_bytes, export_subnet, read_metadata
from nasfleet.server.api import ApiSettings, create_app
from nasfleet.server.registry import Registry, ResultRecord
from nasfleet.server.service.jobs import submit_job

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
NB201_OPTIONS = {"channels": 8, "cells_per_stage": 1}
MBV2_ARCH = "w0.25-d2,3,2,2,2,2-e3.6,4.6.3,3.4,6.3,3.3,4.6-k3.5,7.3.5,3.7,5.3,3.3,5.7"
CASES = {
    "nb201": ("nb201", NB201_ARCH, (3, 8, 8), NB201_OPTIONS),
    "mbv2": ("mbv2", MBV2_ARCH, (3, 16, 16), None),
}


def reference(
    space: str, arch: str, shape: tuple[int, ...], options: Any, classes: int = 4
) -> torch.nn.Module:
    """The PyTorch network an export of these arguments holds: built from the export's seed, in eval mode."""
    torch.manual_seed(INIT_SEED)
    return nasfleet.build_subnet(space, arch, classes, shape, options).eval()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding, relative to the outputs' scale (fresh MBV2s answer ~1e-11 in eval)."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4 * scale)


def onnx_outputs(data: bytes, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"input": batch})
    return np.asarray(output)


def torch_outputs(network: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(network(torch.from_numpy(batch)).numpy())


def batches(shape: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal((n, *shape)).astype(np.float32) for n in (1, 3)]


# -- the Python API ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_an_onnx_file_runs_in_onnxruntime_as_the_pytorch_network(case: str, tmp_path: Path) -> None:
    space, arch, shape, options = CASES[case]
    path = nasfleet.export_subnet(space, arch, tmp_path / "net.onnx", num_classes=4, input_shape=shape,
                                  space_options=options)  # fmt: skip
    data = path.read_bytes()
    network = reference(space, arch, shape, options)
    torch.manual_seed(INIT_SEED + 1)  # the same arch, other weights: its outputs must fail the comparison
    other = nasfleet.build_subnet(space, arch, 4, shape, options).eval()
    for batch in batches(shape):  # batch 1 and 3: the batch dimension is dynamic
        actual = onnx_outputs(data, batch)
        assert actual.shape == (len(batch), 4)
        assert_close(actual, torch_outputs(network, batch))
        with pytest.raises(AssertionError):
            assert_close(actual, torch_outputs(other, batch))
    model = onnx.load_from_string(data)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == list(shape)


@pytest.mark.parametrize("case", list(CASES))
def test_a_torchscript_file_runs_as_the_pytorch_network(case: str, tmp_path: Path) -> None:
    space, arch, shape, options = CASES[case]
    path = export_subnet(space, arch, tmp_path / "net.pt", format="torchscript", num_classes=4,
                         input_shape=shape, space_options=options)  # fmt: skip
    extra = {"nasfleet.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    network = reference(space, arch, shape, options)
    for batch in batches(shape):
        assert_close(torch_outputs(loaded, batch), torch_outputs(network, batch))
    described = json.loads(extra["nasfleet.json"])
    assert (described["nasfleet.space"], described["nasfleet.arch"]) == (space, arch)
    assert described["nasfleet.num_classes"] == "4"
    assert described["nasfleet.input_shape"] == ",".join(map(str, shape))


def test_the_onnx_metadata_says_what_the_file_holds() -> None:
    data = export_bytes(
        "nb201", NB201_ARCH, num_classes=5, input_shape=(1, 8, 8), space_options=NB201_OPTIONS
    )
    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert props["nasfleet.space"] == "nb201" and props["nasfleet.arch"] == NB201_ARCH
    assert props["nasfleet.num_classes"] == "5" and props["nasfleet.input_shape"] == "1,8,8"
    assert json.loads(props["nasfleet.space_options"]) == NB201_OPTIONS
    assert read_metadata(data) == {k: v for k, v in props.items() if k.startswith("nasfleet.")}


def test_onnx_exports_are_byte_identical_and_leave_the_callers_random_state_alone() -> None:
    state = torch.get_rng_state()
    first = export_bytes(
        "nb201", NB201_ARCH, num_classes=4, input_shape=(3, 8, 8), space_options=NB201_OPTIONS
    )
    assert torch.equal(torch.get_rng_state(), state)
    again = export_bytes(
        "nb201", NB201_ARCH, num_classes=4, input_shape=(3, 8, 8), space_options=NB201_OPTIONS
    )
    assert first == again


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "tflite"}, "format must be one of onnx, torchscript, but got 'tflite'"),
        ({"arch": "|bogus~0|"}, "nb201"),
        ({"input_shape": (3, 0, 8)}, "input_shape must be three positive integers"),
        ({"num_classes": 1}, "num_classes must be >= 2, but got 1"),
    ],
)
def test_bad_arguments_raise_and_write_nothing(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    arguments: dict[str, Any] = {"arch": NB201_ARCH, "space_options": NB201_OPTIONS, **changes}
    arch = arguments.pop("arch")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_subnet("nb201", arch, tmp_path / "net.onnx", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_never_replaced(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be a regular file or a new one"):
        export_subnet("nb201", NB201_ARCH, tmp_path, space_options=NB201_OPTIONS)
    assert tmp_path.is_dir()


def test_import_nasfleet_stays_light_and_exports_export_subnet() -> None:
    probe = "import sys, nasfleet; f = nasfleet.export_subnet; print(f.__module__, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["nasfleet.export", "False"]


# -- the command ---------------------------------------------------------------------------------------------
def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args], env={"COLUMNS": "200"})


def one_line(output: str) -> str:
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
def test_the_command_exports_an_arch(file_format: str, tmp_path: Path) -> None:
    out = tmp_path / f"net.{file_format}"
    result = run("--space", "mbv2", "--arch", MBV2_ARCH, "--format", file_format, "--num-classes", "4",
                 "--input-shape", "3,16,16", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: {file_format}" in result.stderr
    data = out.read_bytes()
    assert read_metadata(data)["nasfleet.arch"] == MBV2_ARCH
    network, (batch, _) = reference("mbv2", MBV2_ARCH, (3, 16, 16), None), batches((3, 16, 16))
    if file_format == "onnx":
        assert_close(onnx_outputs(data, batch), torch_outputs(network, batch))
    else:
        assert_close(torch_outputs(torch.jit.load(str(out)), batch), torch_outputs(network, batch))


def test_the_command_writes_the_file_to_standard_output() -> None:
    result = run("--space", "nb201", "--arch", NB201_ARCH, "--input-shape", "3,8,8", "--out", "-")
    assert result.exit_code == 0, result.output
    metadata = read_metadata(result.stdout_bytes)
    assert (metadata["nasfleet.num_classes"], metadata["nasfleet.input_shape"]) == ("10", "3,8,8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--format", "tflite"],
            "Invalid value for '--format': 'tflite' is not one of 'onnx', 'torchscript'",
        ),
        (["--arch", "|bogus~0|"], "Invalid value for --arch: nb201:"),
        (["--input-shape", "3,8"], "Invalid value for --input-shape: input_shape must be three positive"),
        (["--input-shape", "3,x,8"], "Invalid value for --input-shape: must be three integers C,H,W"),
        (["--num-classes", "1"], "Invalid value for '--num-classes': 1 is not in the range 2<="),
        (["--space", "nb999"], "Invalid value for --space: space must be one of"),
    ],
)
def test_bad_options_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    given = {"--space": "nb201", "--arch": NB201_ARCH, "--out": str(tmp_path / "net.onnx")}
    given.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = run(*[word for pair in given.items() for word in pair])
    assert result.exit_code == 2
    assert message in one_line(result.output)
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_the_command_says_what_to_install(tmp_path: Path) -> None:
    out = tmp_path / "net.onnx"
    argv = ["export", "--space", "nb201", "--arch", NB201_ARCH, "--out", str(out)]
    code = f"import sys; sys.modules['onnx'] = None; from nasfleet.cli import app; app({argv!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "ONNX export needs the onnx package: pip install 'nasfleet[export]'" in one_line(done.stderr)
    assert not out.exists()


# -- from a job: the command and the HTTP route -------------------------------------------------------------
@dataclass
class Api:
    url: str
    registry_url: str
    keys: dict[str, str]
    done: str
    queued: str


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A real registry with a finished job (tiny NB201, 3x8x8, 4 classes) and a queued one, under uvicorn."""
    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'registry.sqlite'}"
    registry = Registry(url)
    keys = {}
    for tenant in ("acme", "globex"):
        registry.create_tenant(tenant)
        keys[tenant] = registry.create_api_key(tenant)
    done = submit_job(registry, "acme", characteristics(0), budget=8, options=OPTIONS)
    registry.set_result(ResultRecord(done.id, NB201_ARCH, 1.0, {"fg_fi": 1.0}, 10, 20))
    queued = submit_job(registry, "acme", characteristics(1), budget=8, options=OPTIONS)
    port = free_port()
    config = uvicorn.Config(create_app(registry, ApiSettings()), host="127.0.0.1", port=port,
                            log_level="warning", ws="none")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Api(f"http://127.0.0.1:{port}", url, keys, done.id, queued.id)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        registry.close()


def check_job_file(data: bytes, file_format: str) -> None:
    """The finished job's SubNet: its arch, the job's space options, classes and input shape; it runs."""
    metadata = read_metadata(data)
    assert metadata["nasfleet.arch"] == NB201_ARCH
    assert json.loads(metadata["nasfleet.space_options"]) == OPTIONS.space_options
    assert (metadata["nasfleet.num_classes"], metadata["nasfleet.input_shape"]) == ("4", "3,8,8")
    network, (_, batch) = reference("nb201", NB201_ARCH, (3, 8, 8), NB201_OPTIONS), batches((3, 8, 8))
    if file_format == "onnx":
        actual = onnx_outputs(data, batch)
    else:
        actual = torch_outputs(torch.jit.load(io.BytesIO(data)), batch)
    assert_close(actual, torch_outputs(network, batch))


def test_the_command_exports_a_finished_job_by_its_prefix(api: Api, tmp_path: Path) -> None:
    out = tmp_path / "job.onnx"
    result = run("--job", api.done[:8], "--registry", api.registry_url, "--out", str(out))
    assert result.exit_code == 0, result.output
    check_job_file(out.read_bytes(), "onnx")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--job", "f" * 32], 2, "Invalid value for --job: must be the id of a registered job or its prefix"),
        (["--job", "QUEUED"], 1, "--job: job QUEUED has no result yet: it is queued"),
        (["--job", "DONE", "--arch", NB201_ARCH], 2, "--arch cannot be combined with --job"),
        (["--job", "DONE", "--registry", "sqlite:///missing.db"], 2, "Invalid value for --registry"),
    ],
)
def test_bad_job_options_are_named(
    api: Api, args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    words = [api.done if w == "DONE" else api.queued if w == "QUEUED" else w for w in args]
    words = [*words, *(["--registry", api.registry_url] if "--registry" not in words else [])]
    result = run(*words, "--out", str(tmp_path / "job.onnx"))
    assert result.exit_code == code, result.output
    assert message.replace("QUEUED", api.queued) in one_line(result.output)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
def test_the_http_route_sends_the_finished_jobs_file(api: Api, file_format: str) -> None:
    with api_client(api.url, api.keys["acme"]) as client:
        answer = client.get(f"/v1/jobs/{api.done}/export", params={"format": file_format})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    suffix = ".onnx" if file_format == "onnx" else ".pt"
    assert answer.headers["content-disposition"] == f'attachment; filename="nasfleet-{api.done}{suffix}"'
    check_job_file(answer.content, file_format)


def test_the_http_route_refuses_what_it_cannot_export(api: Api) -> None:
    with api_client(api.url, api.keys["acme"]) as acme, api_client(api.url, api.keys["globex"]) as globex:
        queued = acme.get(f"/v1/jobs/{api.queued}/export")
        assert (queued.status_code, queued.json()["error"]) == (409, "not_done")
        assert f"job {api.queued} has no SubNet to export: it is queued" in queued.json()["message"]
        bad = acme.get(f"/v1/jobs/{api.done}/export", params={"format": "tflite"})
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "format"
        other = globex.get(f"/v1/jobs/{api.done}/export")  # another tenant's job answers as a missing one
        missing = globex.get(f"/v1/jobs/{'0' * 32}/export")
        assert other.status_code == 404 and other.content == missing.content
    assert httpx.get(f"{api.url}/v1/jobs/{api.done}/export").status_code == 401


def test_without_onnx_the_http_route_says_so(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # the server runs in this process: onnx is not importable
    with api_client(api.url, api.keys["acme"]) as client:
        answer = client.get(f"/v1/jobs/{api.done}/export")
        assert (answer.status_code, answer.json()["error"]) == (501, "export_unavailable")
        assert "pip install 'nasfleet[export]'" in answer.json()["message"]
        assert client.get(f"/v1/jobs/{api.done}/export", params={"format": "torchscript"}).status_code == 200
