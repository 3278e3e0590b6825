"""The Flower ``ServerApp``: one nasfleet round over every connected device (`docs/architecture.md`).

Query every node for its characteristics, constraints and profile; register each device under its
tenant and submit its personalized search job; run all the round's jobs at once through the orchestrator
and Celery workers (`RoundRecorder.search`: embedded by default, distributed when ``broker`` is set);
send each device its SubNet in a ``train`` message; collect the training reports; in rounds 2..R let the
reports choose what each device trains next (`refine`); record everything in the registry. A node that
does not answer in time or answers with an error is recorded with that status,
and the round goes on for the others; so does a device whose search fails.

With ``shared-baseline`` the round also searches *one* architecture per hardware tier: data-agnostic
(the generic prior batch, no device's characteristics) and under the tightest limits of the tier's
devices whose own search succeeded, so it fits every one of them; each device trains its tier's one too,
which measures what personalization buys over a per-tier search. They are one more job per tier, run
once the devices' jobs are done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from nasfleet.progress import Update, progress
from nasfleet.protocol.messages import (
    DataCharacteristics,
    DeviceIdentity,
    DeviceProfile,
    MessageError,
    ResourceConstraints,
    SubNetAssignment,
    TrainingReport,
)
from nasfleet.protocol.wire import QUERY, TRAIN, pack, unpack
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.outcomes import save_outcomes
from nasfleet.server.federation.refine import refine
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder, tier_of
from nasfleet.server.registry import ResultRecord

SETTLE_S = 2.0  # with num-clients 0, the round starts once no node has joined for this long


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """The connected node ids, once ``count`` are connected or ``timeout`` seconds have passed; with
    ``count`` 0, once at least one is and none has joined for ``SETTLE_S`` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[int] = []
    changed = time.monotonic()
    while True:
        nodes = sorted(grid.get_node_ids())
        if nodes != seen:
            seen, changed = nodes, time.monotonic()
        settled = bool(nodes) and time.monotonic() - changed >= SETTLE_S
        if (len(nodes) >= count if count else settled) or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def exchange(
    grid: Grid, contents: Mapping[int, RecordDict], kind: str, timeout: float, label: str = ""
) -> dict[int, Message]:
    """Send one message per node and return the replies that arrived in time (`collect_replies`), by
    node id; with a *label*, show the replies' progress as they come in."""
    messages = [Message(content, node, kind) for node, content in contents.items()]
    with progress(label, len(messages), enabled=bool(label)) as update:
        return collect_replies(grid, set(grid.push_messages(messages)), timeout, update)


def collect_replies(
    grid: Grid, pending: set[str], timeout: float, update: Update, poll: float = 0.5
) -> dict[int, Message]:
    """The replies to the *pending* message ids, by sender node id, polled every *poll* seconds.

    *timeout* is a silence timeout: collecting ends once every message has its reply, or once no reply
    has come for *timeout* seconds (counted from the call, then from the latest reply). A deployed fleet
    answers in parallel, so this is the wait for each device; Flower's simulation answers a few nodes at
    a time (one per actor), where a deadline for the whole exchange would time out every device after
    the first waves however healthy they are."""
    replies: dict[int, Message] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            replies[reply.metadata.src_node_id] = reply
            deadline = time.monotonic() + timeout
        update(len(replies))
        if pending:
            time.sleep(poll)
    return replies


def parse_query_reply(node: int, reply: Message | None) -> DeviceOutcome:
    """A device's outcome after the query: ok with its messages, or timeout/error with the reason."""
    if reply is None:
        return DeviceOutcome(node, status="timeout", error="no reply to the query in time")
    if reply.has_error():
        return DeviceOutcome(node, status="error", error=f"device error: {reply.error.reason}")
    try:
        content = reply.content
        return DeviceOutcome(
            node,
            identity=unpack(content, "identity", DeviceIdentity),
            characteristics=unpack(content, "characteristics", DataCharacteristics),
            constraints=unpack(content, "constraints", ResourceConstraints),
            profile=unpack(content, "profile", DeviceProfile),
        )
    except MessageError as error:
        return DeviceOutcome(node, status="error", error=f"malformed query reply: {error}")
    except Exception as error:  # one device's reply never aborts the round for the others
        return DeviceOutcome(node, status="error", error=f"unreadable query reply: {_reason(error)}")


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"


def assignment(outcome: DeviceOutcome, job_id: str, arch: str, config: RoundConfig) -> SubNetAssignment:
    assert outcome.characteristics is not None
    chars = outcome.characteristics
    return SubNetAssignment(job_id, config.space, arch, chars.num_classes, chars.input_shape, config.train)


def train_round(
    grid: Grid,
    outcomes: list[DeviceOutcome],
    results: Mapping[str, ResultRecord],
    config: RoundConfig,
    shared_jobs: Mapping[str, str],
) -> None:
    """Send each ok device its SubNet (then its tier's shared one, if any) and attach the reports it
    returns. A device whose SubNet *is* its tier's shared arch is not sent it again: it already trained
    that arch with the same budget, seed and data, so its report stands for the baseline's too (copied
    under the shared job)."""
    for shared in (False, True) if shared_jobs else (False,):
        jobs: dict[int, str | None] = {}
        for o in (o for o in outcomes if o.ok):
            job = shared_jobs.get(tier_of(o)) if shared else o.job_id
            if not (shared and shared_from_round_one(o, job, results)):  # the latter sets shared_report
                jobs[o.node] = job
        contents = {
            o.node: pack(RecordDict(), "subnet", assignment(o, job, results[job].arch, config))
            for o in outcomes
            if (job := jobs.get(o.node)) is not None and job in results
        }
        if not contents:
            continue
        label = "local training, round 1" + (", shared SubNets" if shared else "") + " (devices done)"
        replies = exchange(grid, contents, TRAIN, config.train_timeout, label)
        for outcome in outcomes:
            if outcome.node in contents:
                _attach_report(outcome, replies.get(outcome.node), shared)


def shared_from_round_one(
    outcome: DeviceOutcome, job: str | None, results: Mapping[str, ResultRecord]
) -> bool:
    """Whether the device's round-1 report was on the shared *job*'s arch; if so it becomes the device's
    shared report."""
    report = outcome.report
    if job is None or job not in results or report is None or report.arch != results[job].arch:
        return False
    outcome.shared_report = replace(report, job_id=job)
    return True


def _attach_report(outcome: DeviceOutcome, reply: Message | None, shared: bool) -> None:
    report = _read_report(outcome, reply)
    if report is None:
        return
    if shared:
        outcome.shared_report = report
    else:
        outcome.report = report


def _read_report(
    outcome: DeviceOutcome, reply: Message | None, arch: str | None = None
) -> TrainingReport | None:
    """The device's training report, or None after failing the device with the reason (a missing or
    malformed reply, or with *arch* given, a report on another SubNet than the one sent)."""
    if reply is None or reply.has_error():
        reason = "no training report in time" if reply is None else f"device error: {reply.error.reason}"
        outcome.fail("timeout" if reply is None else "error", reason)
        return None
    try:
        report = unpack(reply.content, "report", TrainingReport)
    except MessageError as error:
        outcome.fail("error", f"malformed training report: {error}")
        return None
    except Exception as error:  # one device's reply never aborts the round for the others
        outcome.fail("error", f"unreadable training report: {_reason(error)}")
        return None
    if arch is not None and report.arch != arch:
        outcome.fail(
            "error", f"training report arch must be the SubNet sent ({arch}), but got {report.arch[:200]}"
        )
        return None
    return report


def train_chosen(
    grid: Grid,
    outcomes: Sequence[DeviceOutcome],
    chosen: Mapping[int, str],
    config: RoundConfig,
    label: str = "local training",
) -> dict[int, TrainingReport]:
    """Send each device in *chosen* (node id -> arch) that SubNet under its own job; its checked reports."""
    by_node = {o.node: o for o in outcomes if o.node in chosen}
    contents = {
        node: pack(RecordDict(), "subnet", assignment(o, o.job_id, chosen[node], config))
        for node, o in by_node.items()
    }
    replies = exchange(grid, contents, TRAIN, config.train_timeout, label)
    reports = {node: _read_report(o, replies.get(node), chosen[node]) for node, o in by_node.items()}
    return {node: report for node, report in reports.items() if report is not None}


def run_round(grid: Grid, config: RoundConfig, recorder: RoundRecorder) -> list[DeviceOutcome]:
    """One whole round (see the module docstring); returns every device's outcome."""
    nodes = wait_for_nodes(grid, config.num_clients, config.node_wait)
    queries = {node: RecordDict() for node in nodes}
    replies = exchange(grid, queries, QUERY, config.query_timeout, "device queries (replies)")
    outcomes = [parse_query_reply(node, replies.get(node)) for node in nodes]
    for outcome in outcomes:
        try:
            recorder.register(outcome, config)
        except Exception as error:  # e.g. a job the registry refuses: this device fails, the round goes on
            outcome.fail("error", f"could not register the device or submit its search: {_reason(error)}")
    results, shared = recorder.search(outcomes, config)
    train_round(grid, outcomes, results, config, {t: job for t, job in shared.items() if job in results})

    def train(chosen: Mapping[int, str], number: int) -> dict[int, TrainingReport]:
        return train_chosen(grid, outcomes, chosen, config, f"local training, round {number} (devices done)")

    refine(outcomes, results, config, recorder.registry, train)
    recorder.finish(outcomes, results, config.name or None)
    if config.outcomes_file:
        save_outcomes(outcomes, config.outcomes_file)
    return outcomes


def make_server_app(config: RoundConfig | None = None, recorder: RoundRecorder | None = None) -> ServerApp:
    """A ServerApp running `run_round`; without ``config`` it reads the run config (deployment engine)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        round_config = config or RoundConfig.from_run_config(context.run_config)
        run_round(grid, round_config, recorder or RoundRecorder(round_config.registry))

    return server


#: The app the deployment engine loads (``nasfleet.server.federation.app:app``).
app = make_server_app()
