"""Third-party strategies: the example plug-in installed for real, and broken plug-ins reported, not fatal.

The example package (``tests/plugins/nasfleet-example-strategy``) is copied to a temporary directory (so
the build leaves nothing in the source tree) and installed with pip into another temporary directory
(``--target``: offline, no dependencies, no build isolation, so it uses this environment's setuptools).
That directory is put on ``sys.path`` for the module's tests only; the project's environment never sees
the distribution.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_support import forget, install
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.spaces import NB201Space
from nasfleet.strategies import PluginWarning, StrategyError, available_strategies, get_strategy
from nasfleet.testing import check_strategy

DISTRIBUTION, MODULE = "nasfleet-example-strategy", "nasfleet_example_strategy"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plug-in, pip-installed into a temporary directory that is on ``sys.path`` meanwhile."""
    target = install([DISTRIBUTION], tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        forget(MODULE)


def test_available_strategies_lists_the_plugin_with_its_distribution(installed_plugin: Path) -> None:
    entry = available_strategies()["hillclimb"]
    assert entry.origin == f"{DISTRIBUTION} 0.1.0"
    assert entry.entry_point == f"hillclimb = {MODULE}:HillClimb"
    assert entry.summary == "Stochastic hill climbing: mutations of the best architecture told so far."
    assert Path(inspect.getfile(entry.cls)).is_relative_to(installed_plugin)  # the installed copy
    assert available_strategies()["evolution"].origin == "built-in"


def test_get_strategy_builds_the_plugin_by_name(installed_plugin: Path) -> None:
    strategy = get_strategy("hillclimb", NB201Space(), seed=0, budget=4, config={"expected_mutations": 2})
    assert strategy.config == {"expected_mutations": 2}
    assert len(strategy.ask(3)) == 3


def test_strategies_list_shows_the_plugin(installed_plugin: Path) -> None:
    result = CliRunner().invoke(app, ["strategies", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert re.search(rf"^hillclimb +{DISTRIBUTION} 0\.1\.0 +Stochastic hill climbing: ", rows["hillclimb"])
    assert re.search(r"^random +built-in +Uniformly random feasible architectures", rows["random"])
    assert result.stdout.splitlines()[0].split() == ["name", "origin", "description"]


def test_the_contract_suite_passes_on_the_plugin_in_one_call(installed_plugin: Path) -> None:
    check_strategy(available_strategies()["hillclimb"].cls, invalid_configs=[{"expected_mutations": 0}])


def test_nothing_is_installed_in_the_project_environment(installed_plugin: Path) -> None:
    probe = f"import importlib.metadata as m; m.distribution({DISTRIBUTION!r})"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "PackageNotFoundError" in result.stderr


# -- broken plug-ins ---------------------------------------------------------------------------------------
BROKEN_MODULE = '''
from nasfleet.strategies import RandomSearch


class Misnamed(RandomSearch):
    """Declares a name that differs from its entry point."""

    name = "something-else"


class Shadow(RandomSearch):
    """Claims the built-in name 'random'."""

    name = "random"
'''


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A distribution, made by hand on ``sys.path``, whose entry points are all unusable."""
    (tmp_path / "nasfleet_broken_plugin.py").write_text(BROKEN_MODULE)
    (tmp_path / "nasfleet_broken_import.py").write_text("raise ImportError('simulated missing dependency')\n")
    info = tmp_path / "nasfleet_broken_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nasfleet-broken-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [nasfleet.strategies]
            broken = nasfleet_broken_import:Anything
            notaclass = json:dumps
            misnamed = nasfleet_broken_plugin:Misnamed
            random = nasfleet_broken_plugin:Shadow
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    forget("nasfleet_broken_plugin")
    forget("nasfleet_broken_import")


def test_broken_plugins_are_reported_by_entry_point_and_left_out(broken_plugins: None) -> None:
    with pytest.warns(PluginWarning) as warned:
        entries = available_strategies()
    messages = sorted(str(warning.message) for warning in warned)
    assert len(messages) == 4
    origin = "of nasfleet-broken-plugins 1.0 is ignored"
    assert messages[0].startswith(
        f"strategy plug-in entry point 'broken = nasfleet_broken_import:Anything' {origin}"
    )
    assert "importing it failed with ImportError: simulated missing dependency" in messages[0]
    assert "'misnamed = nasfleet_broken_plugin:Misnamed'" in messages[1]
    assert (
        "entry point's name must equal the class's name, but Misnamed.name is 'something-else'" in messages[1]
    )
    assert (
        "'notaclass = json:dumps'" in messages[2]
        and "must load a subclass of nasfleet Strategy" in messages[2]
    )
    assert "'random = nasfleet_broken_plugin:Shadow'" in messages[3]
    assert "the name 'random' is already provided by built-in" in messages[3]
    assert {"annealing", "evolution", "random"} <= set(entries) and "broken" not in entries
    assert entries["random"].origin == "built-in"


def test_get_strategy_explains_why_a_broken_plugin_is_unavailable(broken_plugins: None) -> None:
    with pytest.raises(StrategyError, match=r"'broken = nasfleet_broken_import:Anything'.*simulated missing"):
        get_strategy("broken", NB201Space(), seed=0, budget=3)


def test_strategies_list_survives_broken_plugins(broken_plugins: None) -> None:
    result = CliRunner().invoke(app, ["strategies", "list"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert {"annealing", "evolution", "random"} <= listed and not {"broken", "misnamed", "notaclass"} & listed
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4 and "'broken = nasfleet_broken_import:Anything'" in result.stderr
