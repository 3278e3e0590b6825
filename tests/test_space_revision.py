"""A job remembers its space's revision, and a nasfleet whose space means other networks refuses to
resume it (issue 16): its archive and checkpoint were scored on the networks the old revision built."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_support import characteristics

from nasfleet.server.registry import Registry
from nasfleet.server.service.jobs import JobRun, SearchError, job_settings, submit_job
from nasfleet.server.service.named_jobs import differences
from nasfleet.spaces import get_space

CHARS = characteristics(sketches=False)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'registry.db'}")


@pytest.mark.parametrize("space", ["nb201", "mbv2"])
def test_a_job_stores_its_spaces_revision_and_runs_under_it(registry: Registry, space: str) -> None:
    job = submit_job(registry, "acme", CHARS, space=space, budget=4)
    assert job.options["space_revision"] == get_space(space).revision
    assert JobRun(job, registry).id == job.id  # the same revision: it can run


def test_a_job_of_another_revision_is_refused_naming_both(registry: Registry) -> None:
    settings = job_settings(CHARS, space="mbv2", budget=4)
    settings["options"]["space_revision"] = 1  # mbv2 is revision 2 since its widths and head changed
    registry.create_tenant("acme", exist_ok=True)
    job = registry.create_job("acme", **settings)
    with pytest.raises(SearchError, match=r"created with space mbv2 revision 1, but mbv2 is revision 2 here"):
        JobRun(job, registry)


def test_a_job_stored_before_revisions_were_kept_runs_and_resumes_by_name(registry: Registry) -> None:
    settings = job_settings(CHARS, space="nb201", budget=4)
    del settings["options"]["space_revision"]
    registry.create_tenant("acme", exist_ok=True)
    job = registry.create_job("acme", name="old", **settings)
    assert JobRun(job, registry).id == job.id
    assert differences(job, job_settings(CHARS, space="nb201", budget=4)) == []
