"""A bounded pool of worker threads behind a queue of generation jobs, with a history that survives restarts.

A job goes queued → running → done | failed | cancelled. Cancelling is cooperative: a running job's `stop` event is
checked by `Job.check_cancelled()`, which the runner calls from the engine's progress callback (after every patch
round) and between the steps of a job, so the engine stops within one patch without any change to its code.

Every state change appends the job's record as one JSON line to `jobs.jsonl` in the output folder; on start the last
record of each job is read back (a torn last line from a crash is skipped), and jobs that were queued or running
when the server stopped are marked failed, since their worker is gone.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notagen.errors import NotaGenError

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
HISTORY_FILE = "jobs.jsonl"


class QueueFullError(NotaGenError):
    """Too many jobs are waiting; the client should retry later (HTTP 429)."""


class JobCancelled(Exception):
    """Raised inside a running job when it has been cancelled; unwinds the engine's loop."""


@dataclass
class Job:
    """One generation request and everything known about its progress and results."""

    id: str
    request: dict[str, Any]
    """What was asked (prompt, sampling, seed, n, max_bars, …): JSON-safe, persisted."""
    work: Any = None
    """What the runner needs that is not persisted (the continuation text); None after a restart."""
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def check_cancelled(self) -> None:
        """Raise JobCancelled when the job has been asked to stop."""
        if self.stop.is_set():
            raise JobCancelled(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "created": self.created, "started": self.started,
                "finished": self.finished, "request": self.request, "progress": dict(self.progress),
                "results": list(self.results), "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(id=data["id"], request=data.get("request", {}), state=data.get("state", "failed"),
                   created=data.get("created", 0.0), started=data.get("started"), finished=data.get("finished"),
                   progress=data.get("progress", {}), results=data.get("results", []), error=data.get("error"))


Runner = Callable[[Job], list[dict[str, Any]]]
"""Runs a job in a worker thread and returns its results; calls `job.check_cancelled()` often."""


class JobManager:
    """`workers` threads take jobs from a queue of at most `queue_size` waiting jobs."""

    def __init__(self, runner: Runner, output_dir: Path, workers: int = 1, queue_size: int = 16) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.runner = runner
        self.output_dir = Path(output_dir)
        self.workers = workers
        self.queue_size = queue_size
        self.history_path = self.output_dir / HISTORY_FILE
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._lock = threading.Condition()
        self._history_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._load_history()

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._closing = False
            for number in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"notagen-worker-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, cancel the running ones, and wait for the workers."""
        with self._lock:
            self._closing = True
            for job in self._jobs.values():
                if job.state == "running":
                    job.stop.set()
            self._lock.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

    # -- requests ---------------------------------------------------------------------------------------------
    def submit(self, request: dict[str, Any], work: Any = None) -> Job:
        """Queue a job; QueueFullError when `queue_size` jobs are already waiting."""
        with self._lock:
            if len(self._queue) >= self.queue_size:
                raise QueueFullError(f"{len(self._queue)} jobs are already waiting (queue size {self.queue_size}); "
                                     f"retry later")
            job = Job(id=uuid.uuid4().hex[:16], request=request, work=work)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._record(job)
            self._lock.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str) -> dict[str, Any] | None:
        """The job as a dict, read under the lock (a worker may be updating it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._public(job)

    def history(self) -> list[dict[str, Any]]:
        """Every known job, newest first."""
        with self._lock:
            return [self._public(job) for job in sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)]

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask a running one to stop; finished jobs are left as they are."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state == "queued":
                self._queue.remove(job)
                job.state, job.finished = "cancelled", time.time()
                self._record(job)
            elif job.state == "running":
                job.stop.set()
            return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(job.state == "running" for job in self._jobs.values())
            return {"queued": len(self._queue), "running": running, "queue_size": self.queue_size,
                    "workers": self.workers}

    def update_progress(self, job: Job, **values: Any) -> None:
        with self._lock:
            job.progress.update(values)

    # -- internals --------------------------------------------------------------------------------------------
    def _public(self, job: Job) -> dict[str, Any]:
        data = job.to_dict()
        if job.state == "queued":
            data["position"] = next((i for i, queued in enumerate(self._queue) if queued is job), 0)
        if job.state == "running" and job.stop.is_set():
            data["cancelling"] = True
        return data

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
                job = self._queue.popleft()
                job.state, job.started = "running", time.time()
                self._record(job)
            try:
                results = self.runner(job)
            except JobCancelled:
                state, error, results = "cancelled", None, []
            except NotaGenError as problem:
                state, error, results = "failed", str(problem), []
            except Exception as problem:  # a bug in one job must not kill the worker; the reason is kept
                state, error, results = "failed", f"internal error: {type(problem).__name__}: {problem}", []
            else:
                state, error = "done", None
            with self._lock:
                if state == "done" and job.stop.is_set():
                    state = "cancelled"  # asked to stop after the last check: honour it, keep what was written
                job.state, job.error, job.results, job.finished = state, error, results, time.time()
                job.work = None
                self._record(job)

    def _record(self, job: Job) -> None:
        line = json.dumps(job.to_dict(), ensure_ascii=False) + "\n"
        with self._history_lock, open(self.history_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

    def _load_history(self) -> None:
        if not self.history_path.is_file():
            return
        latest: dict[str, dict[str, Any]] = {}
        with open(self.history_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(data, dict) and isinstance(data.get("id"), str):
                    latest[data["id"]] = data
        for data in latest.values():
            job = Job.from_dict(data)
            if job.state not in FINAL_STATES:
                job.state, job.finished = "failed", job.finished or time.time()
                job.error = "interrupted: the server stopped before this job finished"
                self._record(job)
            self._jobs[job.id] = job


__all__ = ["Job", "JobManager", "JobCancelled", "QueueFullError", "STATES", "FINAL_STATES", "HISTORY_FILE"]
