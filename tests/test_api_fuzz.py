"""Property-based fuzzing of the tenant API from its own OpenAPI schema (schemathesis).

Every operation gets schema-valid and schema-breaking requests (bodies, query and path parameters),
with a valid API key; each answer must be no 5xx, have a status the schema declares, a body that
conforms to the declared schema and content type, and schema-breaking requests must be refused with a
4xx. The app runs in process over ASGI on a registry of its own, with no orchestrator: jobs stay queued.
Bounded: at most ``MAX_EXAMPLES`` cases per operation and generation mode, no shrinking, derandomized.

Longer runs, and runs on PostgreSQL: ``NASFLEET_FUZZ_EXAMPLES`` sets ``MAX_EXAMPLES`` (50), and
``NASFLEET_FUZZ_REGISTRY`` a registry URL to fuzz instead of a temporary SQLite file (an empty database,
e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/fuzz``; its rows are kept).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from service_support import accept_413_as_rejection, schema_checks

from nasfleet.server.api import ApiSettings, create_app
from nasfleet.server.registry import Registry

MAX_EXAMPLES = int(os.environ.get("NASFLEET_FUZZ_EXAMPLES", "50"))
CHECKS = schema_checks()


_STATE = Path(tempfile.mkdtemp(prefix="nasfleet-api-fuzz-"))
_REGISTRY = Registry(os.environ.get("NASFLEET_FUZZ_REGISTRY") or f"sqlite:///{_STATE / 'registry.sqlite'}")
_REGISTRY.create_tenant("fuzz", exist_ok=True)
HEADERS = {"Authorization": f"Bearer {_REGISTRY.create_api_key('fuzz')}"}
APP = create_app(_REGISTRY, ApiSettings(max_body_bytes=2**18, max_active_jobs=10_000))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES, no_shrink=True,
    deterministic=True, database="none",
)  # fmt: skip
accept_413_as_rejection(schema)


@atexit.register
def _cleanup() -> None:
    """The app is built at import (schemathesis reads its schema then); its registry goes at exit."""
    _REGISTRY.close()
    shutil.rmtree(_STATE, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_within_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=HEADERS, checks=CHECKS)


# Stateful: sequences that follow the schema's links (submit -> get, result, cancel, reports) on real job ids
Workflow = schema.as_state_machine()
Workflow.TestCase.settings = settings(
    max_examples=MAX_EXAMPLES // 2, stateful_step_count=6, deadline=None,
    suppress_health_check=list(HealthCheck), derandomize=True,
)  # fmt: skip


class _Workflow(Workflow):  # type: ignore[misc,valid-type]
    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
        return {"headers": HEADERS}

    def validate_response(self, response: object, case: schemathesis.Case, **kwargs: object) -> None:
        case.validate_response(response, checks=CHECKS)  # type: ignore[arg-type]


TestWorkflow = _Workflow.TestCase
