"""Executors by name: ``local`` (processes on this machine) and ``ray`` (Ray Data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _local(workers: int) -> Any:
    from thresher.selection.executors.local import LocalExecutor

    return LocalExecutor(workers=workers)


def _ray(workers: int) -> Any:
    from thresher.selection.executors.ray_data import RayExecutor

    return RayExecutor(workers=workers)


EXECUTORS: dict[str, Callable[[int], Any]] = {"local": _local, "ray": _ray}
