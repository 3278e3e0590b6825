"""nasfleet's Celery app with task events on or off as ``NASFLEET_BENCH_EVENTS`` says (``1`` or ``0``), and
a trivial task, for the workers of ``events_cost.py`` (``celery -A events_app worker``)."""

from __future__ import annotations

import os

import redis

from nasfleet.server.service.celery_app import app

__all__ = ["app", "touch"]

EVENTS = os.environ.get("NASFLEET_BENCH_EVENTS", "1") == "1"
TOUCH_TASK = "nasfleet.bench.touch"
app.conf.update(worker_send_task_events=EVENTS, task_send_sent_event=EVENTS)


@app.task(name=TOUCH_TASK)
def touch(counter: str) -> None:
    """Count one task done in the broker's Redis database: the least work a task can do and be seen."""
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.incr(counter)
    finally:
        client.close()
