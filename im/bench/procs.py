"""Worker processes of the load generator, as seen from the bench runner."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any


class BenchError(RuntimeError):
    """A benchmark step failed (a worker crashed, a server did not come up...)."""


class WorkerPool:
    """One process per job; every job goes ready -> go -> done -> close in step."""

    def __init__(self, kind: str, specs: list[dict[str, Any]], name: str = "worker") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        from im.bench.loadgen import worker_entry

        for i, spec in enumerate(specs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_entry,
                args=(kind, spec, child),
                name=f"im-bench-{name}-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.pipes.append(parent)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _collect(self, expect: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        for i, pipe in enumerate(self.pipes):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(
                        f"{self.kind} worker {i} gave no '{expect}' in {timeout:.0f} s"
                    )
                if pipe.poll(min(remaining, 0.5)):
                    try:
                        msg = pipe.recv()
                    except EOFError:
                        raise BenchError(f"{self.kind} worker {i} exited") from None
                    break
                if not self.procs[i].is_alive() and not pipe.poll(0):
                    raise BenchError(
                        f"{self.kind} worker {i} died (exit code {self.procs[i].exitcode})"
                    )
            if msg[0] == "error":
                raise BenchError(f"{self.kind} worker {i} failed:\n{msg[1]}")
            if msg[0] != expect:
                raise BenchError(f"{self.kind} worker {i}: expected {expect}, got {msg[0]}")
            out.append(msg[1])
        return out

    def ready(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        return self._collect("ready", timeout)

    def go(self, delay: float = 0.5) -> float:
        start = time.time() + delay
        for pipe in self.pipes:
            pipe.send(("go", start))
        return start

    def results(self, timeout: float) -> list[dict[str, Any]]:
        return self._collect("done", timeout)

    def close(self, timeout: float = 30.0) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("close",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_pool(
    kind: str, specs: list[dict[str, Any]], *, run_timeout: float, ready_timeout: float = 300.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Start the workers, wait until all are ready, start them together, collect."""
    with WorkerPool(kind, specs) as pool:
        infos = pool.ready(ready_timeout)
        pool.go()
        results = pool.results(run_timeout)
    return infos, results
