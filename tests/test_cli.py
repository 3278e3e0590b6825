"""The ``nasfleet`` command line, driven as a user would."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.spaces import get_space

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output, with rich's error-box borders and line wraps collapsed to single spaces."""
    result = runner.invoke(app, list(args))
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


@pytest.mark.parametrize("space", ["nb201", "mbv2"])
def test_sample_then_cost_writes_exact_costs(tmp_path: Path, space: str) -> None:
    code, output = _run("space", "sample", "--space", space, "--n", "6", "--seed", "4")
    assert code == 0
    archs = output.split()
    assert len(archs) == 6, output
    assert _run("space", "sample", "--space", space, "--n", "6", "--seed", "4")[1].split() == archs
    (tmp_path / "archs.txt").write_text("# a comment\n\n" + "\n".join(archs) + "\n")
    out = tmp_path / "costs.csv"
    code, _ = _run(
        "space", "cost", "--space", space, "--archs", str(tmp_path / "archs.txt"), "--out", str(out),
        "--num-classes", "100", "--input-shape", "1,8,8",
    )  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["arch"] for row in rows] == archs
    search_space = get_space(space)
    for row in rows:
        cost = search_space.cost(search_space.decode(row["arch"]), 100, (1, 8, 8))
        assert (int(row["params"]), int(row["flops"])) == (cost.params, cost.flops)


def test_enumerate_lists_every_nb201_cell() -> None:
    code, output = _run("space", "enumerate", "--space", "nb201")
    assert code == 0
    assert len(set(output.split())) == 15_625
    code, output = _run("space", "enumerate", "--space", "mbv2")
    assert code != 0 and "too large" in output


def test_a_bad_line_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    archs = tmp_path / "archs.txt"
    out = tmp_path / "costs.csv"
    out.write_text("previous results\n")
    archs.write_text("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|\n|bad~0|+|x|\n")
    code, output = _run("space", "cost", "--archs", str(archs), "--out", str(out))
    assert code == 2
    assert "line 2" in output
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archs.txt", "costs.csv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-shape", "3,32"], "three positive integers"),
        (["--input-shape", "3,30,30"], "divisible by 4"),
        (["--space", "darts"], "space must be one of"),
        (["--num-classes", "1"], "num-classes"),
    ],
)
def test_invalid_options_are_rejected(tmp_path: Path, args: list[str], message: str) -> None:
    archs = tmp_path / "archs.txt"
    archs.write_text("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    code, output = _run("space", "cost", "--archs", str(archs), "--out", str(tmp_path / "o.csv"), *args)
    assert code == 2
    assert message in output
    assert not (tmp_path / "o.csv").exists()


def test_missing_archs_file_is_reported(tmp_path: Path) -> None:
    code, output = _run(
        "space", "cost", "--archs", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o.csv")
    )
    assert code == 2 and "no such file" in output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--partition", "dirichlet:0", "alpha"),
        ("--dataset", "mnist", "dataset spec"),
        ("--strategy", "nope", "nope"),
        ("--space", "nope", "nope"),
        ("--local-workers", "0", "must be at least 1 without --broker"),
        ("--broker", "kafka://x", "broker must be a URL with a scheme of"),
    ],
)
def test_simulate_rejects_bad_options_before_starting_flower(option: str, value: str, message: str) -> None:
    code, output = _run("simulate", option, value)
    assert code == 2 and message in output
