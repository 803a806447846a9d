"""Start and stop a worker as a child process (``hps run``, benchmarks, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

READY_MARKER = b" ready."


def worker_argv(
    *,
    queues: str,
    pool: str,
    concurrency: int = 1,
    loglevel: str = "INFO",
    hostname: str | None = None,
    quiet: bool = False,
) -> list[str]:
    """The ``celery worker`` command line of a platform worker (``quiet``: no gossip,
    mingle or heartbeat traffic, for single-worker setups)."""
    argv = [
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues",
        queues,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--hostname",
        hostname or f"hps-{queues.replace(',', '-')}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    return [*argv, "--without-heartbeat"] if quiet else argv


class WorkerProcess:
    """``celery -A worker.app worker`` in a subprocess with its own session (process group),
    logging to ``log_path``; returns once the worker reports ready."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        name: str = "hps",
        queues: str = "gpu,default",
        pool: str = "solo",
        cwd: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *worker_argv(
                    queues=queues,
                    pool=pool,
                    quiet=True,
                    hostname=f"{name}-{uuid.uuid4().hex[:6]}@%h",
                ),
            ],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(ready_timeout_s)

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited during start-up:\n{self._tail()}")
            if READY_MARKER in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"the worker was not ready after {timeout_s:.0f} s:\n{self._tail()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole worker, as an OOM kill or a lost machine would."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._log.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Warm shutdown (finish the current task), SIGKILL after ``timeout_s``."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
