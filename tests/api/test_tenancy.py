"""Everything stored belongs to the tenant that made it (issue 26, findings 2, 4, 5, 11): two
tenants reaching for each other's pools, jobs, uploads and cached forms, against a real server.
Tenant ``team-a`` has two keys; ``key-b`` is a tenant of its own."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.api.conftest import make_app
from tests.api.servers import fault_backend, serve_app
from thresher.prompting import PoolStore, demonstration

A1, A2, B = ({"Authorization": f"Bearer {k}"} for k in ("key-a1", "key-a2", "key-b"))
RECIPE = {"steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": 3}]}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("tenancy")


@pytest.fixture(scope="module")
def server(provider, local_lm, embedder, home, data_dir):
    # The operator's shared pool, built under the data folder as `thresher pool build` does.
    rows = [demonstration(str(i), f"catalog entry {i} about trains", label="ab"[i % 2])
            for i in range(6)]  # fmt: skip
    PoolStore(home, embedder).create("catalog", rows)
    with fault_backend() as (backend, _):
        app = make_app(
            provider, local_lm, data_dir=home, api_keys=["key-b"],
            tenants={"team-a": ["key-a1", "key-a2"]}, shared_pools=["catalog"],
            routes={"mirror": backend}, compress_min_tokens=20,
        )  # fmt: skip
        with serve_app(app) as base, httpx.Client(base_url=base, timeout=120) as client:
            yield client, app.state.thresher


def records(word: str, n: int = 4) -> list[dict]:
    return [{"id": f"{word}{i}", "text": f"{word} example {i}", "label": "xy"[i % 2]}
            for i in range(n)]  # fmt: skip


def search(client, headers, pool: str) -> httpx.Response:
    return client.post(
        "/v1/demonstrations", json={"pool": pool, "query": "example", "k": 2}, headers=headers
    )


def texts(response: httpx.Response) -> set[str]:
    return {d["text"] for d in response.json()["demonstrations"]}


def test_a_pool_belongs_to_its_tenant(server):
    client, _ = server
    made = client.post("/v1/pools", json={"name": "notes", "records": records("alpha")},
                       headers=A1)  # fmt: skip
    assert made.status_code == 201, made.text
    assert texts(search(client, A2, "notes")) <= {f"alpha example {i}" for i in range(4)}
    # key-b's "replace" makes key-b's own pool; team-a's is untouched (finding 5).
    replaced = client.post(
        "/v1/pools", json={"name": "notes", "records": records("beta"), "replace": True},
        headers=B,
    )  # fmt: skip
    assert replaced.status_code == 201, replaced.text
    assert all(t.startswith("alpha") for t in texts(search(client, A1, "notes")))
    assert all(t.startswith("beta") for t in texts(search(client, B, "notes")))
    added = client.post("/v1/pools/notes/records", json={"records": records("gamma", 2)},
                        headers=B)  # fmt: skip
    assert added.status_code == 200 and added.json()["size"] == 6
    assert client.post("/v1/pools", json={"name": "notes", "records": records("x")},
                       headers=A2).status_code == 422  # a's own pool exists for a's other key


def test_another_tenants_pool_answers_as_a_missing_one(server):
    client, _ = server
    made = client.post("/v1/pools", json={"name": "a-only", "records": records("secret")},
                       headers=A1)  # fmt: skip
    assert made.status_code == 201
    foreign = search(client, B, "a-only")
    missing = search(client, B, "never-made")
    assert foreign.status_code == missing.status_code == 404
    said = [r.json()["error"]["message"].replace(n, "<name>")
            for r, n in ((foreign, "a-only"), (missing, "never-made"))]  # fmt: skip
    assert said[0] == said[1] and "a-only" not in missing.text
    grown = client.post("/v1/pools/a-only/records", json={"records": records("b")}, headers=B)
    assert grown.status_code == 404
    chat = {"model": "mirror", "messages": [{"role": "user", "content": "an example please"}],
            "thresher": {"demonstrations": {"pool": "a-only", "k": 2}}}  # fmt: skip
    through_proxy = client.post("/v1/chat/completions", json=chat, headers=B)
    assert through_proxy.status_code == 404 and "secret" not in through_proxy.text
    assert client.post("/v1/chat/completions", json=chat, headers=A2).status_code == 200


def test_shared_pools_are_read_by_all_and_changed_by_none(server):
    client, _ = server
    for headers in (A1, B):
        found = search(client, headers, "catalog")
        assert found.status_code == 200 and texts(found)
        assert all("catalog" in t for t in texts(found))
        overwrite = client.post(
            "/v1/pools", json={"name": "catalog", "records": records("mine"), "replace": True},
            headers=headers,
        )  # fmt: skip
        assert overwrite.status_code == 422 and "THRESHER_SHARED_POOLS" in overwrite.text
        grow = client.post("/v1/pools/catalog/records", json={"records": records("m")},
                           headers=headers)  # fmt: skip
        assert grow.status_code == 422
    assert all("catalog" in t for t in texts(search(client, A1, "catalog")))


def upload(client, headers, name="rows.jsonl", recipe=RECIPE, rows: bytes | None = None):
    data = rows if rows is not None else b"".join(
        json.dumps({"id": str(i), "text": f"row {i} " * (i + 1)}).encode() + b"\n"
        for i in range(12)
    )
    return client.post(
        "/v1/selection/jobs/upload", files={"file": (name, data)},
        data={"recipe": json.dumps(recipe)}, headers=headers,
    )  # fmt: skip


def wait_for(client, headers, job_id, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/selection/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise TimeoutError(job)


def test_a_job_cannot_read_another_tenants_upload_or_output(server, home):
    client, _ = server
    made = upload(client, A1)
    assert made.status_code == 202, made.text
    job = made.json()["id"]
    assert wait_for(client, A1, job)["status"] == "succeeded"
    # Finding 2: the red team's exact request, and its variants.
    tries = [
        f"jobs/{job}/input/rows.jsonl",
        str(home / "jobs" / job / "input" / "rows.jsonl"),
        f"jobs/{job}/output/kept.jsonl",
        f"jobs/../jobs/{job}/input/rows.jsonl",
        "jobs.sqlite",
        "tenants/team-a/pools/notes/records.jsonl",
        "pools/catalog/records.jsonl",
    ]
    answers = set()
    for path in [*tries, "jobs/0123456789abcdef0123456789abcdef/input/rows.jsonl"]:
        response = client.post(
            "/v1/selection/jobs", json={"recipe": RECIPE, "input_path": path}, headers=B
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["param"] == "input_path"
        answers.add(response.json()["error"]["message"])
    assert len(answers) == 1  # existing or not, another's or Thresher's own: one answer
    # Not even the same tenant's other job: a job reads its own folder only.
    again = client.post("/v1/selection/jobs", json={"recipe": RECIPE, "input_path": tries[0]},
                        headers=A2)  # fmt: skip
    assert again.status_code == 422


def test_unknown_and_foreign_job_ids_answer_alike(server):
    client, _ = server
    made = upload(client, A1)
    job = made.json()["id"]
    unknown = "0123456789abcdef0123456789abcdef"
    for path in ("", "/files/report.html"):
        foreign = client.get(f"/v1/selection/jobs/{job}{path}", headers=B)
        missing = client.get(f"/v1/selection/jobs/{unknown}{path}", headers=B)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.text.replace(job, "<id>") == missing.text.replace(unknown, "<id>")
    malformed = client.get("/v1/selection/jobs/not-an-id", headers=B)
    assert malformed.text.replace("not-an-id", "<id>") == missing.text.replace(unknown, "<id>")
    assert job not in client.get("/v1/selection/jobs", headers=B).text
    assert job in client.get("/v1/selection/jobs", headers=A2).text  # the tenant's other key


def test_upload_names_are_made_safe_and_rejected_uploads_leave_nothing(server, home):
    client, _ = server
    long_name = "r" * 300 + ".jsonl"  # 306 characters: the red team's 500
    made = upload(client, B, name=long_name)
    assert made.status_code == 202, made.text
    job = made.json()["id"]
    stored = [p.name for p in (home / "jobs" / job / "input").iterdir()]
    assert len(stored) == 1 and stored[0].endswith(".jsonl") and len(stored[0]) <= 100
    assert wait_for(client, B, job)["status"] == "succeeded"
    before = set((home / "jobs").iterdir())
    big = b"".join(json.dumps({"text": "x" * 1000}).encode() + b"\n" for _ in range(2000))
    for _ in range(5):  # the red team's five rejected uploads left 22 MB behind
        refused = upload(client, B, recipe={"stepz": []}, rows=big)
        assert refused.status_code == 422, refused.text
    assert set((home / "jobs").iterdir()) == before


@pytest.fixture(scope="module")
def document(data_dir):
    story = json.loads((data_dir / "api" / "longqa_small.jsonl").open().readline())
    return story["context"][:2400]


def mirrored(client, headers, messages, **compression):
    body = {"model": "mirror", "messages": messages,
            "thresher": {"compression": {"when": "always", **compression}}}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    counts = dict(kv.split("=") for kv in response.headers["x-thresher-compression"].split("; "))
    sent = json.loads(response.json()["choices"][0]["message"]["content"])
    return sent, counts


def test_the_message_cache_never_crosses_tenants(server, document):
    """Finding 4: a's form of a document is never served to b, whatever b asks; and within a
    tenant a form made for a rate does not serve a token target."""
    client, _ = server
    messages = [{"role": "user", "content": document}, {"role": "user", "content": "Who?"}]
    first, counts = mirrored(client, A1, messages, rate=0.05)
    assert counts["compressed"] == "1"
    _, counts = mirrored(client, A2, messages, rate=0.05)
    assert counts["cached"] == "2"  # the same tenant's other key reuses both forms
    _, counts = mirrored(client, B, messages, rate=0.05)
    assert counts["cached"] == "0" and counts["compressed"] == "1"  # nothing says a sent it
    targeted, counts = mirrored(client, B, messages, target_tokens=580)
    assert counts["cached"] == "0"
    assert len(targeted[0]["content"]) > 2 * len(first[0]["content"])
    _, counts = mirrored(client, A1, messages, target_tokens=580)
    assert counts["cached"] == "0"  # a's rate-0.05 form does not serve a's token target


def test_a_question_aware_form_is_keyed_by_the_question_that_ranked_it(server, document):
    client, _ = server
    ask = {"method": "llmlingua2", "rate": 0.3}
    one = [{"role": "user", "content": document}, {"role": "user", "content": "Who is it?"}]
    other = [{"role": "user", "content": document}, {"role": "user", "content": "Where?"}]
    _, counts = mirrored(client, B, one, **ask)
    assert counts["compressed"] == "1"
    _, counts = mirrored(client, B, other, **ask)
    assert counts["cached"] == "0"  # ranked by another question: compressed again
    assert counts["compressed"] == "1"
    _, counts = mirrored(client, B, one, **ask)
    assert counts["cached"] == "2"  # the document's form for this question, and the question
