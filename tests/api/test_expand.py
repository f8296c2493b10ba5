"""Reversible elision through the proxy, against a real tool-calling backend process
(tests/api/tool_backend.py) and the official openai client: the originals route, tenants kept
apart, and the thresher_expand tool answered by the proxy, plain and streaming."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import serve_app, tool_backend

KEYS = ["key-a", "key-b"]
# Generous: the first request loads the classifier, on a machine other tests keep busy.
SLOW_OK = {"rate": 0.33, "when": "always", "deadline_ms": 120_000}


@pytest.fixture(scope="module")
def backend():
    with tool_backend() as (url, _):
        yield url


@pytest.fixture(scope="module")
def proxy(provider, local_lm, backend):
    app = make_app(
        provider, local_lm, routes={"tools": backend, "no-tools": backend}, compress_min_tokens=50,
        api_keys=KEYS, rate_limit_per_minute=None,
    )  # fmt: skip
    with serve_app(app) as base:
        yield base


@pytest.fixture(scope="module")
def customers(data_dir):
    for line in (data_dir / "content" / "tool_cases.jsonl").open():
        case = json.loads(line)
        if case["name"] == "customers_by_id":
            return json.loads(case["content"])
    raise AssertionError("the customers case is missing from tests/data/content")


def client(base: str, key: str = "key-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def first_turn(base: str, rows: list[dict], **compression) -> list[dict]:
    """A chat whose tool returned the customers, asked about all of them (nothing named):
    the tool result is compressed and remembered with most records elided."""
    messages = [
        {"role": "system", "content": "Answer from the tool results."},
        {"role": "user", "content": "Which plans do the customers have?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "list_customers", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(rows)},
    ]
    options = {**SLOW_OK, **compression}
    answer = client(base).chat.completions.create(
        model="tools", messages=messages, extra_body={"thresher": {"compression": options}}
    )
    return [*messages, {"role": "assistant", "content": answer.choices[0].message.content}]


def ask(messages: list[dict], row: dict) -> list[dict]:
    return [*messages, {"role": "user", "content": f"What is the email of customer {row['id']}?"}]


def requests_seen(backend: str) -> list[dict]:
    return httpx.get(backend.removesuffix("/v1") + "/requests").json()


def offered(body: dict) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or []}


def test_the_model_gets_an_elided_record_through_thresher_expand(proxy, backend, customers):
    row = customers[100]
    history = first_turn(proxy, customers, expand=True)
    before = len(requests_seen(backend))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tools",
        messages=ask(history, row),
        extra_body={"thresher": {"compression": {**SLOW_OK, "expand": True}}},
    )
    answer = raw.parse()
    message = answer.choices[0].message
    assert row["email"] in message.content and not message.tool_calls
    assert answer.choices[0].finish_reason == "stop"
    rounds = requests_seen(backend)[before:]
    assert len(rounds) >= 2 and "thresher_expand" in offered(rounds[0])
    forwarded = rounds[0]["messages"][3]["content"]
    assert row["email"] not in forwarded and "items elided [thr:" in forwarded
    assert rounds[-1]["messages"][-1]["role"] == "tool"  # the proxy answered the call
    report = json.loads(raw.http_response.text)["thresher"]
    assert report["expanded"] and all(h.startswith("thr:") for h in report["expanded"])
    assert answer.usage.completion_tokens == 5 * len(rounds)  # usage summed over the rounds


def test_streaming_expands_without_showing_the_call(proxy, backend, customers):
    row = customers[110]
    history = first_turn(proxy, customers, expand=True)
    stream = client(proxy).chat.completions.create(
        model="tools",
        messages=ask(history, row),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thresher": {"compression": {**SLOW_OK, "expand": True}}},
    )
    text, finishes, usage = "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            assert not choice.delta.tool_calls  # the client never sees thresher_expand
            text += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert row["email"] in text and finishes == ["stop"]
    assert usage is not None and usage.completion_tokens == 10  # two rounds, summed


def test_the_clients_own_tool_calls_pass_through(proxy, backend, customers):
    row = customers[105]
    history = first_turn(proxy, customers, expand=True)
    messages = [
        *history,
        {"role": "user", "content": f"What is the weather, and the email of customer {row['id']}?"},
    ]
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    options = {"thresher": {"compression": {**SLOW_OK, "expand": True}}}
    answer = client(proxy).chat.completions.create(
        model="tools", messages=messages, tools=[weather], extra_body=options
    )
    calls = answer.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    assert answer.choices[0].finish_reason == "tool_calls"
    stream = client(proxy).chat.completions.create(
        model="tools", messages=messages, tools=[weather], extra_body=options, stream=True
    )
    names = [
        d.function.name
        for chunk in stream
        for c in chunk.choices
        for d in c.delta.tool_calls or []
        if d.function and d.function.name
    ]
    assert names == ["get_weather"]


def test_a_backend_that_takes_no_tools_answers_without_it(proxy, backend, customers):
    history = first_turn(proxy, customers)
    options = {"thresher": {"compression": {**SLOW_OK, "expand": True}}}
    for stream in (False, True):
        before = len(requests_seen(backend))
        answer = client(proxy).chat.completions.create(
            model="no-tools", messages=ask(history, customers[102]), extra_body=options,
            stream=stream,
        )  # fmt: skip
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        else:
            text = answer.choices[0].message.content
        assert "4102" in text  # the route's own form kept the record its question names
        refused, retried = requests_seen(backend)[before:]
        assert "thresher_expand" in offered(refused) and "tools" not in retried


def test_without_the_opt_in_no_tool_is_offered(proxy, backend, customers):
    row = customers[101]
    history = first_turn(proxy, customers)
    before = len(requests_seen(backend))
    answer = client(proxy).chat.completions.create(
        model="tools",
        messages=ask(history, row),
        extra_body={"thresher": {"compression": SLOW_OK}},
    )
    assert answer.choices[0].message.content == "I could not find it."
    (seen,) = requests_seen(backend)[before:]
    assert "thresher_expand" not in offered(seen)


def test_originals_route_answers_only_the_tenant_that_elided(proxy, backend, customers):
    first_turn(proxy, customers)
    forwarded = requests_seen(backend)[-1]["messages"][3]["content"]
    handle = forwarded.split("[thr:", 1)[1].split("]", 1)[0]
    url = f"{proxy}/v1/compress/originals/thr:{handle}"
    mine = httpx.get(url, headers={"Authorization": "Bearer key-a"})
    assert mine.status_code == 200
    body = mine.json()
    assert body["kind"] == "items" and body["where"].startswith("$[")
    items = json.loads(body["content"])
    assert items and all(item in customers for item in items)
    theirs = httpx.get(url, headers={"Authorization": "Bearer key-b"})
    unknown = httpx.get(
        f"{proxy}/v1/compress/originals/thr:00000000", headers={"Authorization": "Bearer key-a"}
    )
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
        "00000000", handle
    )
    bad = httpx.get(
        f"{proxy}/v1/compress/originals/nope", headers={"Authorization": "Bearer key-a"}
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "handle"
    assert httpx.get(url).status_code == 401  # the same auth as every route


def test_originals_share_the_sqlite_file_of_the_message_cache(tmp_path):
    from thresher.api.compression_service import CompressionService, SQLiteMessageCache
    from thresher.api.settings import ServiceSettings
    from thresher.api.stages import keep_originals
    from thresher.compression.elision import elide, originals_key

    settings = ServiceSettings(compress_cache_path=tmp_path / "cache.sqlite")
    service = CompressionService.from_settings(settings)
    assert isinstance(service.originals, SQLiteMessageCache)
    span = elide("items", "$[1:3]", "[1,2]")
    keep_originals(service.originals, "tenant-a", [span])
    again = CompressionService.from_settings(settings)  # another worker process's view
    assert again.originals.get(originals_key("tenant-a", span.handle)) == span.record()
    assert again.originals.get(originals_key("tenant-b", span.handle)) is None
    assert (tmp_path / "cache.sqlite.originals").exists()
