"""`nasfleet.progress`: the plain lines it prints when stderr is not a terminal, and nothing when disabled."""

from __future__ import annotations

import pytest

from nasfleet.progress import plain_line, progress


def test_plain_lines_every_5_percent_and_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with progress("search", 40, enabled=True) as update:
        for done in range(4, 41, 4):
            update(done, f"best {1.0 + done / 100:.4g}")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("search: 4/40, best 1.04 (") and lines[0].endswith(" s)")
    assert lines[-1].startswith("search: 40/40, best 1.4 (")


def test_counting_one_by_one_prints_one_line_per_step_without_an_empty_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with progress("scoring", 100, enabled=True) as update:
        for done in range(1, 101):
            update(done)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 20
    assert lines[0].startswith("scoring: 5/100 (") and lines[-1].startswith("scoring: 100/100 (")


def test_the_last_item_is_shown_even_off_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    with progress("timing", 3, enabled=True) as update:
        for done in range(1, 4):
            update(done, "")

    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        "timing: 1/3",
        "timing: 2/3",
        "timing: 3/3",
    ]


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress("search", 10, enabled=False) as update:
        update(10, "best 2")

    assert capsys.readouterr().err == ""


def test_plain_line_format() -> None:
    assert plain_line("search", 40, 40, "best 1.4", 12.4) == "search: 40/40, best 1.4 (12 s)"
    assert plain_line("scoring", 3, 9, "", 0.2) == "scoring: 3/9 (0 s)"
