"""The dtype and threads of compression's models, chosen per CPU from measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from thresher.core.models import ModelProvider
from thresher.core.precision import (
    SPEEDUP,
    CpuProbe,
    cgroup_cpu_quota,
    choose_cpu_dtype,
    choose_threads,
    cpu_flags,
    measure_cpu,
)

# What the probe measured on an AMD EPYC (Zen 4) with 2 threads, once as it is (AVX512-BF16)
# and once with torch held to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2),
# as on an AVX2-only CPU, where bf16 is emulated. Flags of an AVX2-only EPYC (Zen 2).
ZEN2_FLAGS = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2 sha_ni".split())
AVX2_ONLY = CpuProbe({"float32": 1.73e-3, "bfloat16": 8.92e-3}, ZEN2_FLAGS, "AVX2", 2)
NATIVE = CpuProbe(
    {"float32": 1.71e-3, "bfloat16": 0.82e-3},
    ZEN2_FLAGS | {"avx512f", "avx512_bf16"},
    "AVX512",
    2,
)


def test_bf16_is_not_chosen_where_it_is_emulated():
    choice = choose_cpu_dtype(AVX2_ONLY)
    assert choice.value == "float32"
    assert "5.2x slower" in choice.reason and "emulated" in choice.reason
    native = choose_cpu_dtype(NATIVE)
    assert native.value == "bfloat16" and "avx512_bf16 listed" in native.reason
    # A tie is not worth bf16's coarser numbers.
    close = CpuProbe({"float32": 1.0, "bfloat16": 1.0 / (SPEEDUP * 0.9)}, ZEN2_FLAGS, "AVX2", 1)
    assert choose_cpu_dtype(close).value == "float32"


def test_the_provider_asks_the_probe_and_a_setting_overrides_it(tmp_path):
    provider = ModelProvider(tmp_path, device="cpu", cpu_probe=lambda: AVX2_ONLY)
    assert provider.compression_dtype() == "float32"
    assert "emulated" in provider.compression_precision().reason
    fast = ModelProvider(tmp_path, device="cpu", cpu_probe=lambda: NATIVE)
    assert fast.compression_dtype() == "bfloat16"

    def unused() -> CpuProbe:
        raise AssertionError("a set dtype needs no measurement")

    fixed = ModelProvider(tmp_path, device="cpu", dtype="float32", cpu_probe=unused)
    choice = fixed.compression_precision()
    assert choice.value == "float32" and "THRESHER_DTYPE=float32" in choice.reason


def test_the_probe_of_this_machine_is_consistent():
    probe = measure_cpu()
    assert measure_cpu() is probe  # once per process
    assert set(probe.seconds) == {"float32", "bfloat16"}
    assert all(0 < s < 1 for s in probe.seconds.values())
    assert probe.flags == cpu_flags() and probe.threads >= 1 and probe.capability
    choice = choose_cpu_dtype(probe)
    fp32, bf16 = probe.seconds["float32"], probe.seconds["bfloat16"]
    assert (choice.value == "bfloat16") == (bf16 * SPEEDUP <= fp32)
    assert f"{probe.threads} threads" in choice.reason


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="AVX2 kernels are x86's")
def test_with_torch_held_to_avx2_kernels_bf16_is_not_chosen():
    # On a CPU with native bf16 this makes torch emulate it, as an AVX2-only CPU does; on an
    # AVX2-only CPU it changes nothing. Either way bf16 must not be chosen.
    code = (
        "import json; from thresher.core.precision import measure_cpu, choose_cpu_dtype as c;"
        "p = measure_cpu(); print(json.dumps([c(p).value, p.capability, p.seconds]))"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    value, capability, seconds = json.loads(out.stdout)
    assert capability == "AVX2"
    assert value == "float32", seconds


def test_threads_follow_the_setting_or_what_the_process_may_use(tmp_path):
    assert choose_threads(3, 2).value == 3
    usable = len(os.sched_getaffinity(0))
    auto = choose_threads(None, 64)
    assert auto.value <= usable and "affinity" in auto.reason
    assert choose_threads(None, 1).value == 1  # never more than torch is set to
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
