"""schemathesis against the app's own OpenAPI spec: every operation, generated inputs, checked
for no 5xx, documented status codes and bodies that match the spec (a bounded run)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from tests.api.conftest import make_app
from tests.api.servers import serve_app

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def api_schema(provider, local_lm):
    # Generation is capped at one token so a generated chat costs little on 2 cores.
    app = make_app(provider, local_lm, local_max_new_tokens=1, api_keys=[KEY])
    with serve_app(app) as url:
        records = [{"id": str(i), "text": f"example {i}", "label": "ab"[i % 2]} for i in range(6)]
        pool = httpx.post(
            f"{url}/v1/pools", json={"name": POOL, "records": records}, headers=AUTH, timeout=120
        )
        assert pool.status_code == 201, pool.text
        yield schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)


POOL = "fuzz-pool"
LOCAL = "SmolLM2-135M-Instruct"


def steer(case, real: bool):
    """Half the cases name a real model or pool, so accepted paths are fuzzed too (a random
    model name is always a 404)."""
    if real and isinstance(case.body, dict):
        if case.path in ("/v1/chat/completions", "/v1/completions"):
            # One generated token keeps the bounded run fast; oversize max_tokens values are
            # rejected by the backend (tests/core/test_backends.py), not generated.
            case.body.update(model=LOCAL, max_tokens=1)
            case.body.pop("max_completion_tokens", None)
        elif case.path == "/v1/demonstrations":
            case.body["pool"] = POOL
    if real and case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = POOL
    return case


def fuzz(operation, statuses: list[int]) -> None:
    """Run one operation's generated cases through every schemathesis check."""
    # Some bodies are checked past their schema: a job's recipe by the selection engine and its
    # paths against the allowed folders; pool texts and retrieval methods by prompting/; a
    # proxied body by its backend (the local one takes a prompt as text, not token ids). A
    # schema-valid body may still be a 422 there.
    semantic = (
        "/v1/selection/jobs",
        "/v1/pools",
        "/v1/demonstrations",
        "/v1/compress",
        "/v1/chat/completions",
        "/v1/completions",
    )
    excluded = [positive_data_acceptance] if operation.path.startswith(semantic) else []

    @given(case=st.tuples(operation.as_strategy(), st.booleans()).map(lambda c: steer(*c)))
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call_and_validate(headers=AUTH, excluded_checks=excluded)
        statuses.append(response.status_code)

    check()


def test_every_operation_honours_its_spec(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/chat/completions", "POST /v1/pools", "POST /v1/compress"} <= labels
    statuses: list[int] = []
    for operation in operations:
        fuzz(operation, statuses)
    # Both outcomes were exercised: accepted requests and 4xx refusals.
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)


def count_server_errors(operation, examples: int, statuses: list[int], errors: list[str]):
    """Run ``examples`` generated cases of one operation, noting every 5xx."""

    @given(case=st.tuples(operation.as_strategy(), st.booleans()).map(lambda c: steer(*c)))
    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
        database=None,
    )  # fmt: skip
    def run(case):
        response = case.call(headers=AUTH)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            errors.append(f"{operation.label} {response.status_code}: {response.text[:200]}")

    run()


@pytest.mark.slow
def test_a_large_run_answers_no_server_error(api_schema):
    """THRESHER_FUZZ_CASES generated requests (default 10,000) spread over every operation,
    with keys set; every 5xx is collected and reported (the issue's target is none)."""
    import os
    import time

    operations = [result.ok() for result in api_schema.get_all_operations()]
    total = int(os.environ.get("THRESHER_FUZZ_CASES", "10000"))
    statuses: list[int] = []
    errors: list[str] = []
    start = time.monotonic()
    for operation in operations:
        count_server_errors(operation, max(1, total // len(operations)), statuses, errors)
    seconds = time.monotonic() - start
    print(
        f"\nschemathesis: {len(statuses)} cases over {len(operations)} operations in "
        f"{seconds:.0f} s; server errors: {len(errors)}"
    )
    assert not errors, "\n".join(errors[:20])


@pytest.mark.slow
def test_a_stateful_run_answers_no_server_error(api_schema):
    """schemathesis's stateful mode: sequences of calls along the links it infers (a pool made,
    then searched; a job submitted, then read), keys set; every 5xx is collected."""
    import os

    from hypothesis import Phase

    errors: list[str] = []
    calls: list[int] = []

    class Machine(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):
            return {"headers": AUTH}

        def validate_response(self, response, case, **kwargs):
            calls.append(response.status_code)
            if response.status_code >= 500:
                errors.append(
                    f"{case.operation.label} {response.status_code}: {response.text[:200]}"
                )

    from hypothesis.errors import FlakyStrategyDefinition

    try:
        Machine.run(
            settings=settings(
                max_examples=int(os.environ.get("THRESHER_FUZZ_SEQUENCES", "100")),
                stateful_step_count=6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                phases=[Phase.generate],  # no replay: the server keeps state
            )  # fmt: skip
        )
    except FlakyStrategyDefinition:
        # Server state (a pool or job made earlier) changed which rules apply to a sequence
        # hypothesis had seen: it stops there; the calls made so far still count.
        pass
    finally:
        print(f"\nschemathesis stateful: {len(calls)} calls; server errors: {len(errors)}")
    assert calls and not errors, "\n".join(errors[:20])
