"""A real multi-node Ray cluster on this machine, started as a user would: ``ray start``.

Each node is its own ``ray start --block`` process (head, then nodes joining its address), with
one CPU, free ports and its state under a temporary folder. Each such process leads a session
of its own, so a node is stopped by ending exactly the processes of its session (raylet, object
store, agents and workers), and nothing else on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
         "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
# A loopback cluster for tests: no token (Ray's default token lives in the user's home), and
# a dead node is noticed within about two seconds (health checks every 500 ms).
ENV = {"RAY_AUTH_MODE": "disabled"}
NODE_ENV = {**ENV, "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3"}  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def session_members(leader: int) -> list[int]:
    """Every process whose session ``leader`` started (stat field 6 is the session id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == leader:
            found.append(int(entry.name))
    return found


class RayCluster:
    """A head and ``nodes - 1`` more nodes, each with one CPU."""

    def __init__(self, root: Path, nodes: int = 2, timeout: float = 120) -> None:
        self.root = root
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        # Ray's sockets live in its temp dir, and a socket path has at most 107 bytes: the
        # state stays under ``root``, reached through a short link.
        (root / "ray").mkdir(parents=True)
        self.link = Path(tempfile.gettempdir()) / f"ray-{uuid.uuid4().hex[:10]}"
        self.link.symlink_to(root / "ray")
        self._start(["--head", "--port", str(self.port), "--temp-dir", str(self.link),
                     "--include-dashboard", "false"])  # fmt: skip
        deadline = time.time() + 120
        while not self._listening():
            if self.nodes[0].poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"ray head did not start; see {root / 'node-0.log'}")
            time.sleep(0.2)
        try:
            # One node at a time: several raylets registering at once overload the head's GCS
            # on a 2-core machine (a 4-node start timed out with every node starting together).
            for count in range(1, nodes + 1):
                if count > 1:
                    self.add_node()
                self.wait_for(count, timeout)
        except RuntimeError:
            self.stop()
            raise

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _start(self, extra: list[str]) -> None:
        ports = [x for flag, p in zip(PORTS, free_ports(len(PORTS)), strict=True)
                 for x in (flag, str(p))]  # fmt: skip
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus", "1",
               "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
               "--object-store-memory", str(200 << 20), *ports, *extra]  # fmt: skip
        log = open(self.root / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115
        self.nodes.append(subprocess.Popen(cmd, env={**os.environ, **NODE_ENV}, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def add_node(self) -> None:
        self._start(["--address", self.address])

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [sys.executable, "-c", "import ray; ray.init(address='" + self.address + "', "
             "log_to_driver=False); print('alive', sum(n['Alive'] for n in ray.nodes()))"],
            env={**os.environ, **ENV}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        # Ray may print its own log lines after ours (a raylet's notice): find our line.
        counts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("alive ")]
        return int(counts[-1]) if out.returncode == 0 and counts else 0

    def wait_for(self, nodes: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.alive_nodes() != nodes:
            if time.time() > deadline:
                raise RuntimeError(f"the cluster did not reach {nodes} live nodes")
            time.sleep(0.5)

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of one node, as when its machine dies."""
        proc = self.nodes[index]
        for _ in range(2):  # again for any process the first sweep raced with
            for pid in session_members(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait()

    def stop(self) -> None:
        for index in reversed(range(len(self.nodes))):
            self.kill_node(index)
        self.link.unlink(missing_ok=True)
