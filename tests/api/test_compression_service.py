"""The compression stage's shared parts: the worker pool and its bounded queue, stops from
inside a model call, and the per-route prefill model learned from backend answers."""

from __future__ import annotations

import threading
import time

import pytest

from thresher.api.compression_service import (
    Busy,
    PrefillModel,
    StoppableModel,
    WorkerPool,
    deadline_check,
    stoppable_scorer,
)
from thresher.compression.conversation import Stopped


def test_the_pool_bounds_running_and_waiting_requests():
    pool = WorkerPool(workers=1, queue=1)
    entered = threading.Event()
    release = threading.Event()
    waited: list[str] = []

    def hold() -> None:
        with pool.slot(lambda: None):
            entered.set()
            release.wait(10)

    def wait_for_slot() -> None:
        with pool.slot(lambda: None):
            waited.append("ran")

    first = threading.Thread(target=hold)
    first.start()
    entered.wait(10)
    second = threading.Thread(target=wait_for_slot)
    second.start()
    while pool.waiting == 0:
        time.sleep(0.005)
    with pytest.raises(Busy, match="queue full"):  # one running, one waiting: the third is refused
        with pool.slot(lambda: None):
            pass
    release.set()
    first.join(10)
    second.join(10)
    assert waited == ["ran"] and pool.running == 0 and pool.waiting == 0


def test_a_queued_request_gives_up_when_told_to():
    pool = WorkerPool(workers=1, queue=4)
    with pool.slot(lambda: None):
        with pytest.raises(Busy, match="deadline passed while queued"):
            with pool.slot(lambda: "deadline passed"):
                pass
    assert pool.waiting == 0


def test_a_stop_is_raised_from_inside_the_model_call(scorer):
    stop_now = threading.Event()
    wrapped = stoppable_scorer(scorer, lambda: "client disconnected" if stop_now.is_set() else None)
    ids = scorer.encode("The cat sat on the mat. " * 20)
    assert len(wrapped.logprobs_ids([ids])[0]) == len(ids)  # unchanged while not stopped
    assert wrapped.window <= 128 and wrapped.window * wrapped.batch_size <= 256
    stop_now.set()
    with pytest.raises(Stopped, match="client disconnected"):
        wrapped.logprobs_ids([ids])
    assert scorer.model is not wrapped.model  # the shared scorer is untouched
    assert isinstance(wrapped.model, StoppableModel) and wrapped.model.config is scorer.model.config


def test_the_deadline_keeps_a_reserve_for_forwarding():
    now = time.monotonic()
    assert deadline_check(now, 10_000, None)() is None
    assert deadline_check(now - 9.6, 10_000, None)() == "deadline passed"  # 500 ms reserve
    assert deadline_check(now - 0.85, 1_000, None)() is None
    assert deadline_check(now - 0.95, 1_000, None)() == "deadline passed"  # a tenth
    assert deadline_check(now, 10_000, lambda: True)() == "client disconnected"


def test_prefill_speed_from_llama_cpp_timings():
    model = PrefillModel()
    assert model.ms_per_token("llama") is None
    model.observe("llama", {"timings": {"prompt_n": 400, "prompt_ms": 200.0}}, 1.0)
    assert model.ms_per_token("llama") == pytest.approx(0.5)
    assert model.ms_per_token("other") is None


def test_prefill_speed_fitted_from_usage_and_wall_time():
    model = PrefillModel()
    # A backend that spends 20 ms, 0.3 ms per uncached prompt token and 15 ms per output token;
    # half of each prompt came from its cache.
    for prompt, out in [(200, 10), (900, 4), (400, 30), (1600, 12), (700, 20), (1200, 8)]:
        usage = {"prompt_tokens": prompt, "completion_tokens": out,
                 "prompt_tokens_details": {"cached_tokens": prompt // 2}}  # fmt: skip
        seconds = (20 + 0.3 * (prompt - prompt // 2) + 15 * out) / 1000
        model.observe("api", {"usage": usage}, seconds)
    assert model.ms_per_token("api") == pytest.approx(0.3, rel=0.05)


def test_prompts_of_one_size_teach_no_slope():
    model = PrefillModel()
    for _ in range(10):
        model.observe("echo", {"usage": {"prompt_tokens": 3, "completion_tokens": 2}}, 0.002)
    assert model.ms_per_token("echo") is None


def test_one_in_sixteen_skips_measures_again():
    from thresher.api.compression_service import CompressionService

    service = CompressionService()
    decisions = [service.explore("route") for _ in range(32)]
    assert decisions.count(True) == 2 and decisions[15] and decisions[31]
    assert not service.explore("another")


def test_workers_share_remembered_messages_through_sqlite(tmp_path, provider, counter):
    from thresher.api.compression_service import CompressionService
    from thresher.api.settings import ServiceSettings
    from thresher.compression import load_compressor
    from thresher.compression.conversation import ConversationCompressor

    settings = ServiceSettings(
        compress_cache_path=tmp_path / "cache.sqlite", compress_cache_entries=5
    )
    one, two = (
        CompressionService.from_settings(settings),
        CompressionService.from_settings(settings),
    )
    compressor = load_compressor("llmlingua", provider, counter=counter, min_tokens=0)
    text = "The old lighthouse keeper walked along the cliffs every single evening. " * 8
    messages = [{"role": "user", "content": text}]

    def conversation(service):
        return ConversationCompressor(compressor, counter, cache=service.cache, target="gpt-4o")

    first = conversation(one).run(conversation(one).plan(messages))
    assert first.outcomes == {0: "compressed"}
    second = conversation(two).run(conversation(two).plan(messages))  # another worker
    assert second.outcomes == {0: "cached"} and second.messages == first.messages
    for i in range(600):  # bounded: least recently used out
        one.cache.put(f"k{i}", f"v{i}")
    assert len(one.cache) <= 5 + 512 and one.cache.get("k599") == "v599"
