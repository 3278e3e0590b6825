"""The orchestrator: many jobs of many tenants at once, scored by workers, fair, and resumable after a crash.

One loop, one process. Each turn it admits jobs, lets every idle job take a step (`JobRun.begin_step`),
answers the step's new archs from the evaluation cache, dispatches the rest in tasks, polls the registry
for the tasks' cache entries and finishes every step whose values are all in (aggregate, tell, refresh,
checkpoint). Results flow through the registry only, never through Celery: a worker writes each arch's
evaluation and cache entry, the orchestrator reads the cache; a crash of either loses nothing written.

Cache and in-flight sharing: an arch is looked up by (arch, characteristics hash, proxy-configuration
hash); one that another job of any tenant is already waiting for is not sent again, its value serves all.

Fair share between tenants: see `nasfleet.server.service.dispatch.FairShare`.

Crash safety: jobs resume from their checkpoints (see `nasfleet.server.service.jobs`). A task that is lost
(its worker died and the broker does not redeliver, e.g. the whole SQLite-broker worker was killed) is
sent again after ``lost_after_s``; the task is idempotent. One orchestrator per registry (or per disjoint
set of tenants): a restarted one takes over the jobs left running.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from nasfleet.server.registry import CacheEntry, CacheKey, Registry, RegistryError, ResultRecord
from nasfleet.server.service.containment import describe, registry_unreachable
from nasfleet.server.service.dispatch import Dispatcher, FairShare, Flight, RunStats
from nasfleet.server.service.jobs import JobRun
from nasfleet.server.service.liveness import WorkerWatch
from nasfleet.server.service.tasks import make_payload

log = logging.getLogger(__name__)
#: What one job may raise while it is prepared, stepped or stored: anything. It fails that job alone; only
#: an unreachable registry (`nasfleet.server.service.containment.registry_unreachable`) stops the loop.
JOB_ERRORS: tuple[type[Exception], ...] = (Exception,)


class Orchestrator:
    """Runs the registry's unfinished jobs (optionally only *job_ids*) through *dispatcher*.

    Parameters
    ----------
    registry, dispatcher
        Where jobs, evaluations and the cache live; how tasks reach the workers.
    fair
        Per-tenant quotas and dispatch granularity (`FairShare`).
    poll_s, max_poll_s
        How often the registry is polled for results while waiting: every *poll_s* after progress,
        backing off (x1.5 per idle poll) to every *max_poll_s*.
    lost_after_s, max_attempts
        An arch unanswered this long after it was sent is sent again, at most *max_attempts* times in all.
    on_step, housekeeping
        Called after each finished step (with its job), and every *status_every_s* (e.g. to revive local
        workers that exited).
    """

    def __init__(
        self, registry: Registry, dispatcher: Dispatcher, *, fair: FairShare | None = None,
        job_ids: Iterable[str] | None = None, poll_s: float = 0.01, max_poll_s: float = 0.05,
        lost_after_s: float = 900.0,
        max_attempts: int = 3, status_every_s: float = 1.0,
        on_step: Callable[[JobRun], None] | None = None, housekeeping: Callable[[], object] | None = None,
        watch: WorkerWatch | None = None,
    ) -> None:  # fmt: skip
        self.registry, self.dispatcher = registry, dispatcher
        self.fair = fair or FairShare()
        self.job_ids = None if job_ids is None else set(job_ids)
        self.poll_s, self.max_poll_s = poll_s, max(poll_s, max_poll_s)
        self.lost_after_s, self.max_attempts = lost_after_s, max_attempts
        self.status_every_s, self.on_step, self.housekeeping = status_every_s, on_step, housekeeping
        self.watch = watch
        self.notes: dict[str, str] = {}  # job id -> why it does not advance, as last written
        self._broker_problem = self._waiting = ""
        self.active: dict[str, list[JobRun]] = defaultdict(list)
        self.flights: dict[CacheKey, Flight] = {}
        self.queued: dict[str, list[CacheKey]] = defaultdict(list)  # job id -> keys it must send
        self.results: dict[str, ResultRecord] = {}
        self.failed: dict[str, str] = {}
        self.stats = RunStats()
        self._turn = 0
        self._started = time.perf_counter()
        self._finished_any = False  # a job left the loop: admit the next one at once

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self, *, timeout_s: float | None = None, max_steps: int | None = None) -> dict[str, ResultRecord]:
        """Run until no admissible job is left (or *max_steps* steps, or *timeout_s*); the results by job id.

        *max_steps* stops abruptly, leaving the running jobs as a crash would: for tests of resuming.
        """
        self._started = start = time.perf_counter()
        next_admit = next_status = 0.0
        wait = self.poll_s
        while True:
            now = time.perf_counter()
            busy = now
            if now >= next_admit:
                admitted = self._admit()
                next_admit = now + (0.5 if admitted or self._jobs() else 0.0)
                if not self._jobs():
                    break
            if now >= next_status:
                if self.housekeeping is not None:
                    self.housekeeping()
                self._drop_stopped_jobs()
                self._watch_workers()
                next_status = now + self.status_every_s
            progressed = self._begin_steps() | self._dispatch() | self._collect() | self._resend_lost()
            self.stats.busy_seconds += time.perf_counter() - busy
            if max_steps is not None and self.stats.steps >= max_steps:
                break
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"orchestrator: jobs still running after timeout_s={timeout_s}")
            if self._finished_any:
                next_admit = 0.0
                self._finished_any = False
            wait = self.poll_s if progressed else min(self.max_poll_s, wait * 1.5)
            if not progressed:
                time.sleep(wait)
        self.stats.wall_seconds = time.perf_counter() - start
        return self.results

    def _jobs(self) -> list[JobRun]:
        return [job for jobs in self.active.values() for job in jobs]

    def _event(self, kind: str, job: JobRun, count: int = 0) -> None:
        self.stats.events.append((time.perf_counter() - self._started, kind, job.tenant, job.id, count))

    # -- admission -------------------------------------------------------------------------------------------
    def _admit(self) -> bool:
        """Start unfinished jobs, oldest first, up to each tenant's quota; a job that cannot run fails."""
        running = {job.id for job in self._jobs()}
        admitted = False
        for record in self.registry.unfinished_jobs():
            if record.id in running or record.id in self.failed or record.id in self.results:
                continue
            if self.job_ids is not None and record.id not in self.job_ids:
                continue
            if len(self.active[record.tenant]) >= self.fair.max_jobs_per_tenant:
                continue
            try:
                if record.status == "queued" and not self.registry.claim_job(record.id):
                    continue
                job = JobRun(record, self.registry)
            except JOB_ERRORS as error:
                if isinstance(error, RegistryError) and registry_unreachable(error):
                    raise
                self._fail_record(record.id, f"cannot start: {describe(error)}")
                continue
            self.active[record.tenant].append(job)
            self._event("admit", job, job.told)
            admitted = True
        return admitted

    def _drop_stopped_jobs(self) -> None:
        """Forget jobs that failed (a worker could not score) or were cancelled outside this loop."""
        for job in self._jobs():
            self._drop_if_stopped(job)

    def _drop_if_stopped(self, job: JobRun) -> bool:
        """Forget *job* if the registry says it ended outside this loop (cancelled, failed, deleted)."""
        record = self.registry.get_job(job.id)
        if record is not None and not record.finished:
            return False
        self._remove(job, "deleted" if record is None else record.error or record.status, mark=False)
        return True

    # -- steps -----------------------------------------------------------------------------------------------
    def _begin_steps(self) -> bool:
        """Every idle job asks; new archs are answered from the cache, joined to a flight, or queued."""
        began = False
        for job in self._jobs():
            if job.step is not None:
                continue
            try:
                if job.done:  # resumed after its last checkpoint, before its result was stored
                    self._finish(job)
                    continue
                step = job.begin_step()
            except JOB_ERRORS as error:
                if isinstance(error, RegistryError) and registry_unreachable(error):
                    raise
                self._remove(job, f"step failed: {describe(error)}")
                continue
            began = True
            cached = self.registry.cache_get(step.keys.values()) if step.keys else {}
            self.stats.cache_hits += len(cached)
            for arch, key in step.keys.items():
                if key in cached:
                    step.entries[arch] = cached[key]
                elif key in self.flights:
                    self.flights[key].waiters.append(job)
                    self.stats.shared_in_flight += 1
                else:
                    self.flights[key] = Flight(key, [job])
                    self.queued[job.id].append(key)
            self._maybe_finish(job)
        return began

    def _maybe_finish(self, job: JobRun) -> None:
        if job.step is None or job.step.missing:
            return
        try:
            job.finish_step()
            done = job.done
        except RegistryError as error:
            if registry_unreachable(error):
                raise
            if not self._drop_if_stopped(job):  # else cancelled while its step ran
                self._remove(job, f"step failed: {describe(error)}")  # its own record cannot be written
            return
        except JOB_ERRORS as error:
            self._remove(job, f"step failed: {describe(error)}")
            return
        self.stats.steps += 1
        self._event("step", job, job.told)
        if self.on_step is not None:
            self.on_step(job)
        if done:
            self._finish(job)

    def _finish(self, job: JobRun) -> None:
        try:
            self.results[job.id] = job.finish()
        except RegistryError as error:
            if registry_unreachable(error):
                raise
            if not self._drop_if_stopped(job):  # else cancelled after its last step
                self._remove(job, f"cannot store the result: {describe(error)}")
            return
        except JOB_ERRORS as error:
            self._remove(job, f"cannot store the result: {describe(error)}")
            return
        self._event("done", job, job.told)
        self._remove(job, None)

    def _remove(self, job: JobRun, error: str | None, mark: bool = True) -> None:
        """Take *job* out of the loop; with *error*, record it (and mark the job failed if *mark*)."""
        self.active[job.tenant] = [other for other in self.active[job.tenant] if other is not job]
        self._finished_any = True
        for key in self.queued.pop(job.id, []):
            flight = self.flights[key]
            flight.waiters = [w for w in flight.waiters if w is not job]
            if flight.waiters:
                self.queued[flight.waiters[0].id].append(key)
            else:
                del self.flights[key]
        for flight in self.flights.values():
            flight.waiters = [w for w in flight.waiters if w is not job]
        if error is not None:
            self.failed[job.id] = error
            if mark:
                self._fail_record(job.id, error)
            self._event("failed", job, job.told)

    def _fail_record(self, job_id: str, error: str) -> None:
        self.failed[job_id] = error
        log.error("nasfleet: job %s failed: %s", job_id, error)
        try:
            self.registry.update_job(job_id, status="failed", error=error)
        except RegistryError as problem:
            if registry_unreachable(problem):  # not the job's fault: the next orchestrator fails it again
                raise
            log.error("nasfleet: could not mark job %s failed: %s", job_id, problem)

    # -- dispatch and results --------------------------------------------------------------------------------
    def _in_flight(self) -> tuple[int, dict[str, int]]:
        total, per_tenant = 0, defaultdict[str, int](int)
        for flight in self.flights.values():
            if flight.sent_at is not None and flight.waiters:
                total += 1
                per_tenant[flight.waiters[0].tenant] += 1
        return total, per_tenant

    def _dispatch(self) -> bool:
        """Send queued archs, one task per tenant per round, tenants (and their jobs) in round-robin."""
        total, per_tenant = self._in_flight()
        tenants = sorted(tenant for tenant, jobs in self.active.items() if jobs)
        sent_any, sent = False, True
        while sent and tenants and total < self.fair.max_in_flight:
            sent = False
            self._turn += 1
            start = self._turn % len(tenants)
            for tenant in tenants[start:] + tenants[:start]:
                room = min(self.fair.max_in_flight - total, self.fair.tenant_in_flight - per_tenant[tenant])
                job = self._next_job(tenant)
                if room <= 0 or job is None:
                    continue
                count = self._send(job, min(room, self.fair.chunk_size))
                total, per_tenant[tenant] = total + count, per_tenant[tenant] + count
                sent = sent or count > 0
            sent_any = sent_any or sent
        return sent_any

    def _next_job(self, tenant: str) -> JobRun | None:
        jobs = [job for job in self.active[tenant] if self.queued.get(job.id)]
        return jobs[self._turn % len(jobs)] if jobs else None

    def _send(self, job: JobRun, count: int) -> int:
        keys, self.queued[job.id] = self.queued[job.id][:count], self.queued[job.id][count:]
        payload = make_payload(
            job.id, job.record.characteristics_hash, job.scoring, self.registry.deployment_id
        )
        try:
            self.dispatcher.send(payload, [key.arch for key in keys])
        except Exception as error:  # the broker is away: keep the archs queued and try again later
            log.warning("nasfleet: could not send a task of job %s (%s); retrying", job.id, error)
            self.queued[job.id] = keys + self.queued[job.id]
            if not self._broker_problem:
                self._broker_problem = f"broker unreachable: {(str(error).splitlines() or [''])[0]}"
                self._set_notes()
            return 0
        if self._broker_problem:
            self._broker_problem = ""
            self._set_notes()
        now = time.perf_counter()
        for key in keys:
            self.flights[key].sent_at, self.flights[key].attempts = now, self.flights[key].attempts + 1
        self.stats.dispatched += len(keys)
        self._event("dispatch", job, len(keys))
        return len(keys)

    def _collect(self) -> bool:
        """Read the cache entries of sent archs; finish every step that has all its values."""
        sent = [key for key, flight in self.flights.items() if flight.sent_at is not None]
        if not sent:
            return False
        found: dict[CacheKey, CacheEntry] = self.registry.cache_get(sent)
        waiting: list[JobRun] = []
        for key, entry in found.items():
            for job in self.flights.pop(key).waiters:
                if job.step is not None and key.arch in job.step.keys:
                    job.step.entries[key.arch] = entry
                    waiting.append(job)
        for job in dict.fromkeys(waiting):
            self._maybe_finish(job)
        return bool(found)

    # -- worker liveness -------------------------------------------------------------------------------------
    def _watch_workers(self) -> None:
        """Resend everything unanswered when a worker died; say in the jobs' notes when none is alive."""
        if self.watch is None:
            return
        try:
            liveness = self.watch.look()
        except RegistryError as error:
            log.warning("nasfleet: could not read the workers' heartbeats: %s", error)
            return
        if liveness.died or liveness.broker_restarted:
            self._resend_all()
        waiting = ""
        if liveness.alive == 0:
            waiting = (
                f"waiting for workers: none on queue {self.watch.queue!r} has beaten in the last "
                f"{self.watch.dead_after_s:g} s (start `nasfleet worker`)"
            )
        self._set_notes(waiting)

    def _resend_all(self) -> None:
        """Queue again every arch sent and unanswered: a worker holding it may have died with it."""
        for key, flight in self.flights.items():
            if flight.sent_at is not None and flight.waiters:
                flight.sent_at = None
                self.queued[flight.waiters[0].id].append(key)
                self.stats.resent += 1

    def _set_notes(self, waiting: str | None = None) -> None:
        """Write each running job's note where it changed: the broker's problem, else *waiting*."""
        if waiting is not None:
            self._waiting = waiting
        note = self._broker_problem or self._waiting
        for job in self._jobs():
            if self.notes.get(job.id, "") != note:
                try:
                    self.registry.update_job(job.id, note=note)
                except RegistryError as error:  # finished or cancelled meanwhile; the next look retries
                    log.info("nasfleet: could not note job %s: %s", job.id, error)
                    continue
                self.notes[job.id] = note

    def _resend_lost(self) -> bool:
        """Queue again, under a waiting job, every arch sent more than ``lost_after_s`` ago."""
        now, resent = time.perf_counter(), False
        for key, flight in list(self.flights.items()):
            if flight.sent_at is None or now - flight.sent_at < self.lost_after_s:
                continue
            if not flight.waiters:
                del self.flights[key]
            elif flight.attempts >= self.max_attempts:
                for job in list(flight.waiters):
                    self._remove(job, f"arch {key.arch} got no values after {flight.attempts} attempts")
            else:
                flight.sent_at = None
                self.queued[flight.waiters[0].id].append(key)
                self.stats.resent += 1
                resent = True
        return resent
