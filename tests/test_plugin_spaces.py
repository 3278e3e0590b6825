"""Third-party spaces and proxies: the example plug-ins installed for real, broken ones reported, not fatal.

The example packages (``tests/plugins/nasfleet-example-space`` and ``nasfleet-example-proxy``) are built and
pip-installed offline into a temporary directory (`plugin_support.install`) that is on ``sys.path`` for the
module's tests only; the project's environment never sees the distributions.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
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
from nasfleet.plugins import PluginWarning
from nasfleet.proxies import PROXIES, ProxyError, discover_proxies, get_proxy
from nasfleet.proxies.engine import expand_names
from nasfleet.spaces import Cost, Genome, InputShape, NB201Space, available_spaces, get_space, space_names
from nasfleet.testing import ContractError, check_proxy, check_space

PACKAGES = ["nasfleet-example-space", "nasfleet-example-proxy"]
MODULES = ("nasfleet_example_space", "nasfleet_example_proxy")
runner = CliRunner()


def _drop_plugin_proxies() -> None:
    """Plug-in proxies join `PROXIES` for the process's life; other test modules expect the built-ins."""
    for name in [name for name, cls in PROXIES.items() if not cls.__module__.startswith("nasfleet.")]:
        del PROXIES[name]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both example plug-ins, pip-installed into a temporary directory that is on ``sys.path`` meanwhile."""
    target = install(PACKAGES, tmp_path_factory.mktemp("plugins"))
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _drop_plugin_proxies()
        for module in MODULES:
            forget(module)


def _rows(output: str) -> dict[str, str]:
    """Table rows by their first word (the name); continuation lines of folded cells are left out."""
    return {line.split()[0]: line for line in output.splitlines() if line and not line.startswith(" ")}


# -- spaces ----------------------------------------------------------------------------------------------
def test_get_space_builds_the_plugin_space_by_name(installed: Path) -> None:
    space = get_space("tinyconv")
    entry = available_spaces()["tinyconv"]

    assert type(space) is entry.cls and Path(inspect.getfile(entry.cls)).is_relative_to(installed)
    assert (entry.origin, entry.entry_point) == (
        "nasfleet-example-space 0.1.0",
        "tinyconv = nasfleet_example_space:TinyConvSpace",
    )
    assert space.encode(space.decode("c8k3-c16k5")) == "c8k3-c16k5"
    assert (
        space_names() == ["autoformer", "autoformer-edge", "coer", "mbv2", "nb201", "tinyconv"]
        and available_spaces()["nb201"].origin == "built-in"
    )


def test_the_space_contract_passes_on_the_plugin_in_one_call(installed: Path) -> None:
    check_space(get_space("tinyconv"))


def test_spaces_list_shows_builtins_and_the_plugin_with_its_package(installed: Path) -> None:
    table = runner.invoke(app, ["spaces", "list"])
    listed = runner.invoke(app, ["spaces", "list", "--format", "json"])

    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    rows = _rows(table.stdout)
    assert re.search(r"^ ?tinyconv +nasfleet-example-space 0\.1\.0 +Two convolutions", rows["tinyconv"])
    assert re.search(r"^ ?mbv2 +built-in +MobileNetV2-style", rows["mbv2"])
    assert max(map(len, table.stdout.splitlines())) <= 100
    entries = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert entries["tinyconv"]["entry_point"] == "tinyconv = nasfleet_example_space:TinyConvSpace"
    assert (entries["mbv2"]["origin"], entries["mbv2"]["revision"]) == ("built-in", 2)


# -- proxies ---------------------------------------------------------------------------------------------
def test_the_plugin_proxy_is_found_by_name_and_follows_its_declared_labels(installed: Path) -> None:
    assert expand_names("params,log_grad_norm", labeled=True) == (("params", "log_grad_norm"), ())
    assert "log_grad_norm" in expand_names("all", labeled=True)[0]
    assert "log_grad_norm" not in expand_names("all", labeled=False)[0]  # it needs labels
    with pytest.raises(ProxyError, match="proxy 'log_grad_norm' needs labels, but the data is unlabeled"):
        expand_names("log_grad_norm", labeled=False)
    assert type(get_proxy("log_grad_norm")).__module__ == "nasfleet_example_proxy"


def test_the_proxy_contract_passes_on_the_plugin_in_one_call(installed: Path) -> None:
    check_proxy(discover_proxies()[0]["log_grad_norm"].cls, spaces=[get_space("tinyconv")])


def test_proxies_list_shows_builtins_and_the_plugin_with_its_package(installed: Path) -> None:
    table = runner.invoke(app, ["proxies", "list"])
    listed = runner.invoke(app, ["proxies", "list", "--format", "json"])

    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    rows = _rows(table.stdout)
    assert re.search(
        r"^ ?log_grad_norm +nasfleet-example-proxy 0\.1\.0 +higher +needed +", rows["log_grad_norm"]
    )
    assert re.search(r"^ ?params +built-in +higher +- +Number of", rows["params"])
    assert max(map(len, table.stdout.splitlines())) <= 100
    entries = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert entries["log_grad_norm"]["needs_labels"] is True and entries["fg_fi"]["origin"] == "built-in"


def test_score_runs_the_plugin_proxy_on_the_plugin_space(installed: Path, tmp_path: Path) -> None:
    archs, out = tmp_path / "archs.txt", tmp_path / "scores.csv"
    archs.write_text("c4k1-c4k1\nc16k5-c16k5\n")

    options = ["--data", "synthetic:16", "--batch-size", "8", "--proxies", "params,log_grad_norm"]
    result = runner.invoke(
        app, ["score", "--space", "tinyconv", "--archs", str(archs), "--out", str(out), *options]
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [row["arch"] for row in rows] == ["c4k1-c4k1", "c16k5-c16k5"]
    params = [float(row["params"]) for row in rows]
    assert params == [
        get_space("tinyconv").cost(get_space("tinyconv").decode(r["arch"])).params for r in rows
    ]
    assert all(float(row["log_grad_norm"]) > 0 for row in rows)


def test_nothing_is_installed_in_the_project_environment(installed: Path) -> None:
    probe = "import importlib.metadata as m; m.distribution('nasfleet-example-space')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "PackageNotFoundError" in result.stderr


# -- broken plug-ins -------------------------------------------------------------------------------------
BROKEN_MODULE = '''
from nasfleet.proxies import Proxy
from nasfleet.proxies.size import Params
from nasfleet.spaces import NB201Space


class Misnamed(NB201Space):
    name = "something-else"


class Shadow(NB201Space):
    """Claims the built-in name 'nb201'."""

    name = "nb201"


class Abstract(Proxy):
    name = "abstract"


class ShadowParams(Params):
    name = "params"


class ShadowAggregate(Params):
    name = "fgnas"
'''


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A distribution, made by hand on ``sys.path``, whose space and proxy entry points are all unusable."""
    (tmp_path / "nasfleet_broken_kinds.py").write_text(BROKEN_MODULE)
    (tmp_path / "nasfleet_broken_dependency.py").write_text("raise ImportError('simulated missing torch')\n")
    info = tmp_path / "nasfleet_broken_kinds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nasfleet-broken-kinds\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [nasfleet.spaces]
            broken = nasfleet_broken_dependency:Anything
            notaclass = json:dumps
            misnamed = nasfleet_broken_kinds:Misnamed
            nb201 = nasfleet_broken_kinds:Shadow

            [nasfleet.proxies]
            abstract = nasfleet_broken_kinds:Abstract
            params = nasfleet_broken_kinds:ShadowParams
            fgnas = nasfleet_broken_kinds:ShadowAggregate
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    forget("nasfleet_broken_kinds")
    forget("nasfleet_broken_dependency")


def test_broken_space_plugins_are_reported_by_entry_point_and_left_out(broken_plugins: None) -> None:
    with pytest.warns(PluginWarning) as warned:
        entries = available_spaces()

    messages = sorted(str(warning.message) for warning in warned)
    origin = "of nasfleet-broken-kinds 1.0 is ignored"
    assert len(messages) == 4 and all(message.startswith("space plug-in entry point") for message in messages)
    assert f"'broken = nasfleet_broken_dependency:Anything' {origin}" in messages[0]
    assert "importing it failed with ImportError: simulated missing torch" in messages[0]
    assert "Misnamed.name is 'something-else'" in messages[1]
    assert "the name 'nb201' is already provided by built-in" in messages[2]
    assert "must load a subclass of nasfleet SearchSpace, but loaded <function dumps" in messages[3]
    assert {"mbv2", "nb201"} <= set(entries) and not {"broken", "misnamed", "notaclass"} & set(entries)
    assert entries["nb201"].cls is NB201Space
    assert type(get_space("nb201")) is NB201Space  # the built-in is untouched


def test_get_space_explains_why_a_broken_plugin_is_unavailable(broken_plugins: None) -> None:
    with pytest.raises(
        ValueError, match=r"'broken = nasfleet_broken_dependency:Anything'.*simulated missing"
    ):
        get_space("broken")
    with pytest.raises(
        ValueError,
        match=r"space must be one of \['autoformer', 'autoformer-edge', 'coer', 'mbv2', 'nb201'.*\], "
        r"but got 'nope'",
    ):
        get_space("nope")


def test_broken_proxy_plugins_are_left_out_and_the_builtins_keep_their_names(broken_plugins: None) -> None:
    entries, problems = discover_proxies()

    reasons = {problem.name: problem.reason for problem in problems}
    assert reasons["abstract"] == "class Abstract must be concrete, but does not implement ['compute']"
    assert reasons["params"] == "the name 'params' is already provided by built-in"
    assert reasons["fgnas"] == "the name 'fgnas' is already provided by an aggregate"
    assert entries["params"].origin == "built-in" and "abstract" not in entries
    assert expand_names("params,fgnas", labeled=True)[1] == ("fgnas",)  # the aggregate still works
    with pytest.raises(ProxyError, match=r"proxy plug-in entry point 'abstract = nasfleet_broken_kinds:Abs"):
        expand_names("abstract", labeled=True)


def test_the_lists_survive_broken_plugins(broken_plugins: None) -> None:
    spaces = runner.invoke(app, ["spaces", "list"])
    proxies = runner.invoke(app, ["proxies", "list"])

    assert spaces.exit_code == 0 and proxies.exit_code == 0
    assert set(_rows(spaces.stdout)) >= {"mbv2", "nb201"} and "broken" not in spaces.stdout
    assert len([line for line in spaces.stderr.splitlines() if line.startswith("warning: ")]) == 4
    assert len([line for line in proxies.stderr.splitlines() if line.startswith("warning: ")]) == 3


# -- the space contract's exact FLOPs ---------------------------------------------------------------------
class FlopsOffByOne(NB201Space):
    name = "flops_off_by_one"

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        cost = super().cost(arch, num_classes, input_shape)
        return Cost(cost.params, cost.flops + 1)


def test_check_space_requires_the_flops_of_the_built_network() -> None:
    with pytest.raises(ContractError) as caught:
        check_space(FlopsOffByOne(channels=4, cells_per_stage=1), samples=3)
    report = str(caught.value)
    assert report.startswith("1 contract check(s) failed"), report
    assert "flops_off_by_one-cost: ContractError: cost(" in report
    assert ".flops must equal the built network's counted" in report
