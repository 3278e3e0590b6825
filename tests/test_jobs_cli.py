"""``nasfleet jobs`` and named, interruptible ``nasfleet search``es, through the real command.

The listing tests fill a registry directly; the search tests run the real ``nasfleet search`` process
(its own Celery workers on ``digits`` probe batches of 4), interrupt it with SIGINT as a terminal's
Ctrl-C does, and resume it by name; the broker tests run it against a port nothing listens on and a
Redis no worker consumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service_support import OPTIONS, characteristics, children, descendants, process_group, wait_for
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.server.registry import EvaluationRecord, JobRecord, Registry, ResultRecord
from nasfleet.server.service.jobs import submit_job

REDIS_DB = 14
runner = CliRunner()
EVOLUTION = json.dumps({"population_size": 4, "sample_size": 2})
SEARCH = ["search", "--strategy", "evolution", "--strategy-config", EVOLUTION, "--data", "digits",
          "--batch-size", "4", "--ask", "2", "--seed", "3"]  # fmt: skip


def _filled(directory: Path) -> tuple[str, list[JobRecord]]:
    """A registry with a done job "alpha" (acme), a running one "beta" (acme), a queued unnamed one (acme)
    and a queued "alpha" of globex."""
    url = f"sqlite:///{directory / 'registry.db'}"
    with Registry(url) as registry:
        jobs = [submit_job(registry, tenant, characteristics(0, sketches=False), budget=8, options=OPTIONS,
                           name=name) for tenant, name in
                [("acme", "alpha"), ("acme", "beta"), ("acme", None), ("globex", "alpha")]]  # fmt: skip
        evaluation = EvaluationRecord("a", {"synflow": 1.0}, 10, 100, 0.1, worker="w0")
        registry.checkpoint(jobs[0].id, [evaluation], state={"s": 1}, evaluations_done=8)
        registry.set_result(ResultRecord(jobs[0].id, "a", 1.0, {"synflow": 1.0}, 10, 100))
        registry.claim_job(jobs[1].id)
        registry.checkpoint(jobs[1].id, [evaluation], state={"s": 1}, evaluations_done=1)
    return url, jobs


def _jobs(*args: str, url: str, answer: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["jobs", *args], env={"NASFLEET_REGISTRY": url, "COLUMNS": "200"},
                           input=answer)  # fmt: skip
    return result.exit_code, result.output


def test_list_and_show_by_prefix_and_name_in_tables_and_json(tmp_path: Path) -> None:
    # Prepare
    url, jobs = _filled(tmp_path)
    # Execute
    code, table = _jobs("list", url=url)
    json_code, listed = _jobs("list", "--tenant", "acme", "--status", "running", "--format", "json", url=url)
    show_code, shown = _jobs("show", "beta", url=url)
    _, shown_json = _jobs("show", jobs[2].id[:10], "--format", "json", url=url)
    ambiguous_code, ambiguous = _jobs("show", "alpha", url=url)
    _, globex = _jobs("show", "alpha", "--tenant", "globex", "--format", "json", url=url)
    missing_code, missing = _jobs("show", "nothing", url=url)
    # Assert: the table fits 100 columns even on a wide terminal and shows prefixes that resolve
    assert (code, json_code, show_code) == (0, 0, 0), table + listed + shown
    assert max(len(line) for line in table.splitlines()) <= 100 and "jobs (4)" in table
    assert all(job.id[:8] in table and job.id not in table for job in jobs)
    assert "beta" in table and "globex" in table
    assert [(job["id"], job["name"], job["status"]) for job in json.loads(listed)] == [
        (jobs[1].id, "beta", "running")
    ]
    assert jobs[1].id in shown and "running" in shown
    assert json.loads(shown_json)["job"]["id"] == jobs[2].id
    assert ambiguous_code == 1 and "is the name of jobs of tenants acme, globex: give --tenant" in ambiguous
    assert json.loads(globex)["job"]["id"] == jobs[3].id
    assert missing_code == 1 and "but got 'nothing' (nor is it a job's name)" in missing


def test_cancel_as_the_api_does_and_delete_only_finished_jobs_whole(tmp_path: Path) -> None:
    # Prepare
    url, jobs = _filled(tmp_path)
    # Execute / Assert: cancel a running and a queued job; again is no error; a done one is refused
    code, output = _jobs("cancel", "beta", jobs[2].id[:8], "--tenant", "acme", url=url)
    assert code == 0 and f"job {jobs[1].id} (beta): cancelled (1 of 8 evaluations told)" in output
    code, output = _jobs("cancel", "beta", "--tenant", "acme", url=url)
    assert code == 0 and "was cancelled already" in output
    code, output = _jobs("cancel", jobs[0].id, url=url)
    assert code == 1 and f"job {jobs[0].id} cannot be cancelled: it is done" in output
    # delete: a queued job among the ones named refuses them all; no answer deletes nothing
    code, output = _jobs("delete", jobs[0].id, jobs[3].id, url=url)
    assert code == 1 and "is queued: cancel it first" in output and "nothing deleted" in output
    code, output = _jobs("delete", jobs[0].id, url=url, answer="n\n")
    assert code == 1
    with Registry(url) as registry:
        assert len(registry.list_jobs()) == 4 and len(registry.evaluations(jobs[0].id)) == 1
    code, output = _jobs("delete", jobs[0].id[:9], "beta", "--tenant", "acme", "--yes", url=url)
    assert code == 0 and "1 results, 1 evaluations" in output, output
    with Registry(url) as registry:
        exported = registry.export()
    assert sorted(job["id"] for job in exported["jobs"]) == sorted([jobs[2].id, jobs[3].id])
    assert exported["evaluations"] == [] and exported["results"] == []
    assert [job["status"] for job in exported["jobs"] if job["id"] == jobs[2].id] == ["cancelled"]


# -- the real command ----------------------------------------------------------------------------------------
def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasfleet.cli", *args]


def _job(url: str, name: str) -> JobRecord | None:
    with Registry(url) as registry:
        return registry.find_job("default", name)


def _stored(url: str, name: str) -> int:
    job = _job(url, name)
    if job is None:
        return 0
    with Registry(url) as registry:
        return len(registry.evaluations(job.id))


def test_ctrl_c_cancels_keeps_the_scored_archs_and_the_name_resumes(tmp_path: Path) -> None:
    # Prepare: a search as a terminal runs it, in a process group of its own
    url, out, budget = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "out.json", 40
    search = _command(
        *SEARCH, "--budget", str(budget), "--registry", url, "--name", "nightly", "--out", str(out)
    )
    proc = subprocess.Popen(search, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: _stored(url, "nightly") >= 4, 120, "4 stored evaluations")
        workers = children(proc.pid)
        spawned = {pid for worker in workers for pid in process_group(worker)} | set(descendants(proc.pid))
        # Execute: Ctrl-C (the terminal signals the foreground process group)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Assert: exit 130, one line, the job cancelled with what it scored, no process left
    job = _job(url, "nightly")
    assert job is not None and job.status == "cancelled" and job.error == "interrupted (Ctrl-C)"
    kept = _stored(url, "nightly")
    assert proc.returncode == 130, err.decode()
    expected = (f"interrupted: job {job.id} (nightly) cancelled with {kept} of {budget} evaluations "
                "scored; they are kept; rerun with --name nightly to resume")  # fmt: skip
    assert expected in err.decode().splitlines() and 4 <= kept < budget and not out.exists()
    assert workers, "the search started its local workers"
    leftover = [pid for pid in spawned if Path(f"/proc/{pid}").exists()]
    assert not leftover, f"processes the search started are still there: {leftover}"
    # Execute: the same command again resumes the job and finishes it
    resumed = subprocess.run(search, capture_output=True, timeout=180)
    # Assert: done, fewer new evaluations than the budget, the result written
    assert resumed.returncode == 0, resumed.stderr.decode()
    data = json.loads(out.read_text())
    done = _job(url, "nightly")
    assert done is not None and done.status == "done" and done.id == job.id
    assert data["service"]["resumed_from"] == job.evaluations_done > 0
    finished = _stored(url, "nightly")  # distinct archs: a repeated ask is answered from the archive
    assert data["evaluations"] == budget and kept < finished <= budget and finished - kept < budget
    # Execute: once more: the stored result, nothing scored; other settings are refused
    again = subprocess.run(search, capture_output=True, timeout=120)
    refused = subprocess.run([*search[:-2], "--budget", "41", "--out", "-"], capture_output=True, timeout=60)
    assert again.returncode == 0 and "job nightly was done already" in again.stderr.decode()
    assert json.loads(out.read_text())["best"] == data["best"] and _stored(url, "nightly") == finished
    assert refused.returncode == 2 and "budget: stored 40, asked 41" in refused.stderr.decode()


def _failed_search(*options: str) -> tuple[int, str, float]:
    """Exit status, standard error (the error box one line wide) and seconds of a search that fails."""
    started = time.monotonic()
    command = _command(*SEARCH, "--budget", "4", "--out", "-", *options)
    result = subprocess.run(command, capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "1000"})
    return result.returncode, result.stderr.decode(), time.monotonic() - started


def test_an_unreachable_broker_fails_within_seconds(tmp_path: Path) -> None:
    # Execute: nothing listens on port 1
    registry = f"sqlite:///{tmp_path / 'r.db'}"
    code, err, elapsed = _failed_search("--broker", "redis://:secret@127.0.0.1:1/0", "--registry", registry)
    # Assert: fast (the command's imports and data loading included), naming the redacted broker
    assert code == 1 and elapsed < 15, (elapsed, err)
    assert "the service could not run the search, nothing written: broker redis://:**@127.0.0.1:1/0 " \
        "unreachable: " in err and "secret" not in err  # fmt: skip
    with Registry(registry) as opened:
        assert opened.list_jobs() == []


def test_no_worker_on_a_reachable_broker_is_said_within_seconds(tmp_path: Path, redis_broker: str) -> None:
    # Execute: a live Redis, no local worker and no `nasfleet worker`
    registry = f"sqlite:///{tmp_path / 'r.db'}"
    code, err, elapsed = _failed_search("--broker", redis_broker, "--registry", registry,
                                        "--local-workers", "0", "--wait-for-workers", "3")  # fmt: skip
    # Assert
    assert code == 1 and elapsed < 20, (elapsed, err)
    assert "no worker consumes queue 'nasfleet." in err and f"of broker {redis_broker}: none beat in the " \
        "registry within 3 s; start `nasfleet worker`" in err  # fmt: skip
    with Registry(registry) as opened:
        assert opened.list_jobs() == []
