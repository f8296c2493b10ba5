"""Executors by name: ``local`` (this process or forked ones) and ``ray`` (Ray tasks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _local(workers: int | None, address: str | None) -> Any:
    from thresher.selection.executors.local import LocalExecutor

    return LocalExecutor(workers=workers or 1)


def _ray(workers: int | None, address: str | None) -> Any:
    from thresher.selection.executors.ray_cluster import RayExecutor

    return RayExecutor(workers=workers, address=address)


EXECUTORS: dict[str, Callable[..., Any]] = {"local": _local, "ray": _ray}
