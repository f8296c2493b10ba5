"""Selection jobs end to end: submit, follow, download; uploads; bad input; a restart loses
no job. The worker process runs the real selection engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_app
from thresher.api.jobs.store import JobStore

RECIPE = {"steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": 7}]}


@pytest.fixture(scope="module")
def rows_path(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("inputs")
    path = folder / "rows.jsonl"
    lines = (data_dir / "api" / "intent_pool_small.jsonl").read_text().splitlines()[:40]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def client(provider, local_lm, rows_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("jobs")
    app = make_app(provider, local_lm, data_dir=home, jobs_input_roots=[rows_path.parent])
    with TestClient(app) as c:
        yield c


def wait_for(client, job_id, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/selection/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise TimeoutError(job)


def test_submit_follow_and_download(client, rows_path):
    response = client.post(
        "/v1/selection/jobs", json={"recipe": RECIPE, "input_path": str(rows_path)}
    )
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert "7" in job["result"]["summary"]
    assert job["progress"] == job["result"]["summary"]  # not the last bar drawn ("0rows")
    output = next(f for f in job["files"] if f.endswith(job["result"]["output_path"]))
    assert not job["result"]["output_path"].startswith("/")
    kept = [json.loads(line) for line in client.get(output).text.splitlines()]
    assert len(kept) == 7
    assert job["id"] in [j["id"] for j in client.get("/v1/selection/jobs").json()["data"]]


def test_upload(client, rows_path):
    response = client.post(
        "/v1/selection/jobs/upload",
        files={"file": ("mine.jsonl", rows_path.read_bytes())},
        data={"recipe": json.dumps(RECIPE)},
    )
    assert response.status_code == 202, response.text
    assert wait_for(client, response.json()["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"recipe": {"stepz": []}, "input_path": "{rows}"}, 422, "stepz"),
        ({"recipe": RECIPE, "input_path": "/etc/passwd"}, 422, "input_path"),
        ({"recipe": RECIPE, "input_path": "{dir}/missing.jsonl"}, 404, "input_path"),
        ({"recipe": "steps: []"}, 422, "recipe"),
    ],
)
def test_bad_jobs_are_4xx(client, rows_path, body, status, param):
    if isinstance(body.get("input_path"), str):
        body = {**body, "input_path": body["input_path"].format(rows=rows_path,
                                                               dir=rows_path.parent)}  # fmt: skip
    response = client.post("/v1/selection/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"].startswith(param)


@pytest.mark.parametrize(
    "recipe, param",
    [
        ({**RECIPE, "inputs": ["/etc/hostname"]}, "recipe.inputs[0].path"),
        ({**RECIPE, "inputs": ["rows.jsonl"], "output": {"path": "/tmp/x.jsonl"}},
         "recipe.output.path"),
        ({"inputs": ["rows.jsonl"], "steps": [{"type": "classifier", "path": "/etc"}]},
         "recipe.steps[0].path"),
        ({"inputs": ["rows.jsonl"],
          "steps": [{"type": "judge", "backend": "http://10.0.0.1/v1"}]},
         "recipe.steps[0].backend"),
    ],
)  # fmt: skip
def test_files_a_recipe_names_stay_in_the_allowed_folders(client, recipe, param):
    response = client.post("/v1/selection/jobs", json={"recipe": recipe})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


def test_a_relative_input_resolves_under_the_first_root(client):
    response = client.post(
        "/v1/selection/jobs", json={"recipe": {**RECIPE, "inputs": ["rows.jsonl"]}}
    )
    assert response.status_code == 202, response.text
    assert wait_for(client, response.json()["id"])["status"] == "succeeded"


def test_an_upload_name_cannot_leave_the_job_folder(client, rows_path):
    response = client.post(
        "/v1/selection/jobs/upload",
        files={"file": ("../../../escaped.jsonl", rows_path.read_bytes())},
        data={"recipe": json.dumps({**RECIPE, "output": {"path": "../x.jsonl"}})},
    )
    assert response.status_code == 422 and response.json()["error"]["param"] == "recipe.output.path"
    response = client.post(
        "/v1/selection/jobs/upload",
        files={"file": ("../../../escaped.jsonl", rows_path.read_bytes())},
        data={"recipe": json.dumps(RECIPE)},
    )
    job = wait_for(client, response.json()["id"])
    assert f"/v1/selection/jobs/{job['id']}/files/input/escaped.jsonl" in job["files"]


def test_a_failed_job_names_its_files_relative_to_the_job(client, rows_path):
    response = client.post(
        "/v1/selection/jobs/upload",
        files={"file": ("rows.exe", rows_path.read_bytes())},
        data={"recipe": json.dumps(RECIPE)},
    )
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "failed" and "input/rows.exe" in job["error"], job
    assert "/jobs/" not in job["error"]  # before: the server's absolute path to the upload


def test_a_file_part_without_a_file_name_says_to_send_a_file(client, rows_path):
    response = client.post(
        "/v1/selection/jobs/upload",
        files={"file": ("", rows_path.read_bytes())},
        data={"recipe": json.dumps(RECIPE)},
    )
    error = response.json()["error"]
    assert response.status_code == 422 and error["param"] == "file"
    assert "send a file" in error["message"] and "UploadFile" not in error["message"]


def test_unknown_job_and_file_traversal_are_404(client, rows_path):
    assert client.get("/v1/selection/jobs/" + "0" * 32).status_code == 404
    job = client.post(
        "/v1/selection/jobs", json={"recipe": RECIPE, "input_path": str(rows_path)}
    ).json()
    wait_for(client, job["id"])
    response = client.get(f"/v1/selection/jobs/{job['id']}/files/../../jobs.sqlite")
    assert response.status_code == 404
    response = client.get(f"/v1/selection/jobs/{job['id']}/files/kept%00.jsonl")
    assert response.status_code == 404 and response.json()["error"]["param"] == "name"


def test_a_nul_character_in_a_file_name_is_a_422_not_a_500(client, rows_path):
    # Python raises ValueError on such a path; the spec fuzzer sent one as input_path.
    response = client.post(
        "/v1/selection/jobs", json={"recipe": RECIPE, "input_path": str(rows_path) + "\x00"}
    )
    assert response.status_code == 422 and response.json()["error"]["param"] == "input_path"
    # Written by hand: HTTP clients escape the file name of a multipart part.
    parts = [
        b'--b\r\nContent-Disposition: form-data; name="recipe"\r\n\r\n'
        + json.dumps(RECIPE).encode(),
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="rows\x00.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n" + rows_path.read_bytes(),
        b"--b--\r\n",
    ]
    response = client.post(
        "/v1/selection/jobs/upload",
        content=b"\r\n".join(parts),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 422 and response.json()["error"]["param"] == "file"


def test_a_restart_loses_no_job(provider, local_lm, rows_path, tmp_path):
    # Jobs written while no service runs: one queued, one left "running" by a dead worker.
    store = JobStore(tmp_path / "jobs.sqlite")
    recipe = {**RECIPE, "inputs": [str(rows_path)]}
    orphan = store.create(recipe, tmp_path / "jobs" / "a")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert store.claim(dead.pid).id == orphan.id
    queued = store.create(recipe, tmp_path / "jobs" / "b")
    app = make_app(provider, local_lm, data_dir=tmp_path, jobs_input_roots=[rows_path.parent])
    with TestClient(app) as client:
        for job in (queued, orphan):
            assert wait_for(client, job.id)["status"] == "succeeded"
    assert store.get(orphan.id).attempts == 2


def test_job_routes_need_a_key_like_the_rest(provider, local_lm):
    with TestClient(make_app(provider, local_lm, api_keys=["k"])) as client:
        assert client.get("/v1/selection/jobs").status_code == 401
        ok = client.get("/v1/selection/jobs", headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200
