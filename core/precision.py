"""Which dtype and how many threads compression's models run with on this machine: measured.

bfloat16 halves the bytes each weight moves, and where the CPU multiplies bf16 natively
(AVX512-BF16, AMX, Arm's BF16) a transformer's forward pass runs about twice as fast as in
float32. Where it does not (an AVX2-only x86 CPU), torch emulates bf16 and the same pass runs
several times *slower* than float32. So the choice is measured, not assumed: once per process a
short timed linear layer of an encoder's shape runs in each candidate dtype, and bf16 is chosen
only when it beats float32 by a clear margin (:data:`SPEEDUP`). The CPU's capability flags and
torch's kernel level explain the measurement in the reason; they do not decide it, because a
flag can be present while torch's kernels do not use it (``ATEN_CPU_CAPABILITY=avx2`` on a CPU
with AVX512-BF16 makes bf16 as slow as on an AVX2-only one).

The measurement is a :class:`CpuProbe` (timings, flags, kernel level); :func:`choose_cpu_dtype`
is a pure function of it, so a test can feed it what an AVX2-only CPU measured. Threads follow
what this process may use (its CPU affinity and any cgroup CPU quota), never more than torch's
own default, unless ``THRESHER_TORCH_THREADS`` says otherwise.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# bf16 must run the probe at least this much faster than float32 to be chosen: a tie is not
# worth bf16's coarser numbers.
SPEEDUP = 1.2
# Flags (Linux /proc/cpuinfo) of CPUs that multiply bf16 in hardware: x86's AVX512-BF16 and
# AMX-BF16, Arm's BF16 extension.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# The probe: tokens x width against width x 4 width, the feed-forward layer of a small encoder.
PROBE_SHAPE = (256, 384, 1536)
PROBE_REPEATS = 5


@dataclass(frozen=True, slots=True)
class Choice:
    """A chosen value and why, as ``thresher doctor`` and ``/healthz`` show it."""

    value: str | int
    reason: str

    def as_dict(self) -> dict[str, str | int]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class CpuProbe:
    """What this CPU did: the probe's best seconds per dtype, its flags, torch's kernel level.

    Args:
        seconds: Best time of the probe's linear layer, by dtype name (``float32``,
            ``bfloat16``).
        flags: The CPU's feature flags (``/proc/cpuinfo``; empty where unknown).
        capability: torch's CPU kernel level (``torch.backends.cpu.get_cpu_capability()``:
            ``AVX2``, ``AVX512``, ``DEFAULT``, ...).
        threads: torch threads the probe ran with.
    """

    seconds: Mapping[str, float]
    flags: frozenset[str]
    capability: str
    threads: int


def choose_cpu_dtype(probe: CpuProbe, speedup: float = SPEEDUP) -> Choice:
    """bfloat16 when the probe ran at least ``speedup`` times faster in it than in float32,
    else float32; the reason gives the measured ratio and what the CPU lists."""
    fp32, bf16 = probe.seconds["float32"], probe.seconds["bfloat16"]
    listed = sorted(probe.flags & NATIVE_BF16_FLAGS)
    hardware = f"{'/'.join(listed)} listed" if listed else "no avx512_bf16/amx_bf16 listed"
    where = f"{hardware}; torch kernels {probe.capability}; {probe.threads} threads"
    if bf16 * speedup <= fp32:
        return Choice("bfloat16", f"bf16 matmul {fp32 / bf16:.1f}x faster than fp32 here ({where})")
    if bf16 >= fp32:
        return Choice(
            "float32", f"bf16 matmul {bf16 / fp32:.1f}x slower than fp32 here, emulated ({where})"
        )
    return Choice(
        "float32",
        f"bf16 matmul only {fp32 / bf16:.2f}x faster than fp32 here, under the {speedup}x "
        f"that bf16's coarser numbers must buy ({where})",
    )


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (x86 ``flags``, Arm
    ``Features``); empty where the file does not exist (macOS, Windows)."""
    try:
        with path.open() as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def time_linear(dtype: str, repeats: int = PROBE_REPEATS) -> float:
    """Best seconds of one pass of :data:`PROBE_SHAPE`'s linear layer in ``dtype``."""
    import torch

    tokens, width, hidden = PROBE_SHAPE
    kind = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, width, generator=generator).to(kind)
    layer = torch.nn.Linear(width, hidden).to(kind)
    best = math.inf
    with torch.inference_mode():
        layer(x)  # the first call picks and prepares kernels
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x)
            best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def measure_cpu() -> CpuProbe:
    """Time the probe in float32 and bfloat16 (interleaved, best of each), once per process."""
    import torch

    best = {"float32": math.inf, "bfloat16": math.inf}
    for _ in range(2):  # interleaved, so a burst of load elsewhere hits both
        for dtype in best:
            best[dtype] = min(best[dtype], time_linear(dtype))
    return CpuProbe(
        seconds=best,
        flags=cpu_flags(),
        capability=str(torch.backends.cpu.get_cpu_capability()),
        threads=torch.get_num_threads(),
    )


def usable_cpus() -> tuple[int, str]:
    """How many CPUs this process may use, and why: its CPU affinity, capped by a cgroup CPU
    quota (a container's ``--cpus``) when there is one."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None and quota < affinity:
        n = max(1, math.ceil(quota))
        return n, f"cgroup CPU quota {quota:g} of the {affinity} CPUs in this process's affinity"
    limit = "" if quota is None else f" (cgroup CPU quota {quota:g})"
    return affinity, f"{affinity} CPUs in this process's affinity{limit}"


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_*``), or None
    when unlimited or unknown."""
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")
        if quota.strip() != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def choose_threads(setting: int | None, torch_default: int) -> Choice:
    """torch's intra-op threads: the setting when given, else torch's default (one per
    physical core) capped by the CPUs this process may use."""
    if setting is not None:
        return Choice(setting, f"THRESHER_TORCH_THREADS={setting}")
    usable, why = usable_cpus()
    if usable < torch_default:
        return Choice(usable, f"{why}, below torch's default of {torch_default}")
    return Choice(torch_default, f"torch's default (one per physical core); {why}")
