"""Real servers on loopback for the API tests: the app under uvicorn, backends as processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextmanager
def serve_app(app, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread, configured as ``thresher serve`` runs it;
    yields its base URL."""
    from thresher.api.guard import UVICORN_OPTIONS

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **UVICORN_OPTIONS
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def fault_backend() -> Iterator[tuple[str, subprocess.Popen]]:
    """The fault backend (tests/api/fault_backend.py) as its own process; yields (url, proc)."""
    with backend_process("fault_backend.py") as found:
        yield found


@contextmanager
def tool_backend() -> Iterator[tuple[str, subprocess.Popen]]:
    """The tool-calling backend (tests/api/tool_backend.py) as its own process."""
    with backend_process("tool_backend.py") as found:
        yield found


@contextmanager
def backend_process(script: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """One of the loopback backends in tests/api as its own process; yields (url, proc)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", process=proc)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS is None,
    reason="redis-server is not installed (apt-get install -y redis-server; .ci/run does it)",
)


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen]]:
    """A real Redis on a free loopback port, nothing saved to disk; yields (url, process)."""
    assert REDIS is not None
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def verbose_backend() -> Iterator[str]:
    """tests/api/verbose_backend.py as its own process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "verbose_backend.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", process=proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait(timeout=10)
