"""The round's wait for replies (`collect_replies`) is a silence timeout, not a deadline for the whole
exchange: Flower's simulation answers a few devices at a time, and a healthy fleet larger than the
timeout's worth of waves must not be timed out.

The grid is the boundary here: a stand-in with Flower's two calls (`pull_messages` by message id; each
reply's ``metadata.reply_to_message_id`` and ``metadata.src_node_id``) that releases its replies on a
schedule. The real round trips through Flower are in `tests/test_federation.py`.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from nasfleet.server.federation.app import collect_replies


class ScheduledGrid:
    """Replies that become available *at* seconds after construction: {message id: (node, at)}."""

    def __init__(self, schedule: dict[str, tuple[int, float]]) -> None:
        self.start = time.monotonic()
        self.schedule = schedule

    def pull_messages(self, ids: list[str]) -> list[SimpleNamespace]:
        now = time.monotonic() - self.start
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=node))
            for mid in ids
            if (node_at := self.schedule.get(mid)) is not None and (node := node_at[0]) and node_at[1] <= now
        ]


def collect(
    schedule: dict[str, tuple[int, float]], pending: set[str], timeout: float
) -> tuple[set[int], float]:
    started = time.monotonic()
    seen: list[int] = []
    replies = collect_replies(
        ScheduledGrid(schedule), pending, timeout, lambda done, note="": seen.append(done), 0.02
    )  # type: ignore[arg-type]
    assert seen == sorted(seen), "progress only grows"
    return set(replies), time.monotonic() - started


def test_replies_that_keep_coming_are_all_collected_past_the_timeout() -> None:
    # 6 devices answering 0.3 s apart: 1.8 s in all, nearly twice the timeout (a whole-exchange deadline
    # of 1 s would keep only the first three)
    schedule = {f"m{i}": (i + 1, 0.3 * (i + 1)) for i in range(6)}
    nodes, seconds = collect(schedule, set(schedule), timeout=1.0)
    assert nodes == set(range(1, 7))
    assert 1.8 <= seconds < 1.8 + 1.0, seconds  # it ended at the last reply, not a timeout after it


def test_a_silent_device_ends_the_wait_one_timeout_after_the_latest_reply() -> None:
    schedule = {"m1": (1, 0.2), "m2": (2, 0.4)}  # m3 (node 3) never answers
    nodes, seconds = collect(schedule, {"m1", "m2", "m3"}, timeout=1.0)
    assert nodes == {1, 2}
    assert 0.4 + 1.0 <= seconds < 0.4 + 2.0, seconds


def test_no_reply_at_all_ends_the_wait_after_one_timeout() -> None:
    nodes, seconds = collect({}, {"m1"}, timeout=0.5)
    assert nodes == set() and 0.5 <= seconds < 1.0, seconds
