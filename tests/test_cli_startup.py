"""The command line starts light: ``--help`` and ``--version`` load none of the heavy libraries, which
wait inside the commands that use them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.testing import CliRunner

from nasfleet import __version__
from nasfleet.cli import app

HEAVY = (
    "torch",
    "celery",
    "kombu",
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "pydantic",
    "flwr",
    "ray",
    "sklearn",
)


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["search", "--help"], ["serve", "--help"], ["registry", "list", "--help"]],
)
def test_help_and_version_load_no_heavy_library(argv: list[str]) -> None:
    code = f"import sys\nfrom nasfleet.cli import app\ntry:\n    app({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []


def test_a_command_still_loads_what_it_needs() -> None:
    # Guards the check above: it sees a heavy import when one happens.
    assert "torch" in _loaded_after("from nasfleet.cli.inputs import space_named\nspace_named('nb201')")


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"nasfleet {__version__}\n"


def test_serve_refuses_a_taken_port_before_it_starts_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "nasfleet.cli", "serve", "--port", str(port), "--local-workers", "0"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 2
    message = " ".join(done.stderr.replace("│", " ").split())
    assert (
        f"Invalid value for --host/--port: must be free to listen on, but 127.0.0.1:{port} gave:" in message
    )
    assert "nasfleet serve: http://" not in done.stderr  # announced only once it listens
    assert list(tmp_path.iterdir()) == []  # no registry, no broker file, no state directory


def test_every_command_with_a_registry_or_broker_reads_the_same_environment_variables() -> None:
    import typer.main

    group = typer.main.get_command(app)
    seen: dict[str, set[str]] = {"--registry": set(), "--broker": set()}

    def visit(command: click.Command, path: str) -> None:
        for param in command.params:
            for flag in set(seen) & set(getattr(param, "opts", ())):
                assert param.envvar == f"NASFLEET_{flag[2:].upper()}", f"{path} {flag}"
                seen[flag].add(path)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                visit(sub, f"{path} {name}".strip())

    visit(group, "")
    assert {"search", "simulate", "serve", "worker", "orchestrate", "tenants create"} <= seen["--registry"]
    assert {"search", "simulate", "serve", "worker", "orchestrate"} <= seen["--broker"]


def test_build_subnet_needs_neither_celery_nor_sql() -> None:
    code = (
        "import nasfleet, torch\n"
        "arch = '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|'\n"
        "net = nasfleet.build_subnet('nb201', arch, num_classes=7, input_shape=(1, 8, 8))\n"
        "assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 7)"
    )
    assert set(_loaded_after(code)) == {"torch"}


def test_build_subnet_names_what_is_wrong() -> None:
    from nasfleet import build_subnet

    with pytest.raises(ValueError, match="space must be one of"):
        build_subnet("nasbench101", "x")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_subnet("nb201", (0, 0, 0, 0, 0, 0), num_classes=1)
    with pytest.raises(ValueError, match="gene 0 must lie in"):
        build_subnet("nb201", (9, 0, 0, 0, 0, 0))
