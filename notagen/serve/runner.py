"""What a worker does with a job: generate the pieces with the shared model, then write each piece's folder.

The model is loaded once and shared read-only by every worker; each worker thread gets its own
`GenerationEngine` (an engine keeps per-call caches, so two threads must not share one). Pieces are written with
`notagen.generation.output.write_piece`, exactly as `notagen generate` writes them, into `OUTPUT/jobs/<job id>/`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from notagen.checkpoint import Checkpoint
from notagen.formats import OUTPUT_FORMATS
from notagen.generation.engine import GenerationEngine, GenerationLimits, PieceRequest, Progress
from notagen.generation.output import model_summary, piece_manifest, piece_name, write_piece
from notagen.generation.postprocess import generate_checked
from notagen.generation.sampling import SamplingSettings
from notagen.serve.jobs import Job, JobManager

JOBS_DIR = "jobs"
MAX_BATCH = 4
# Writing a piece runs verovio, abc2xml/xml2abc and subprocesses; their thread safety is not documented, so the
# workers take turns for this short step (generation itself, the long step, runs in parallel).
_RENDER_LOCK = threading.Lock()


class PieceRunner:
    """Runs jobs with one loaded checkpoint; `__call__` is the JobManager's runner."""

    def __init__(self, checkpoint: Checkpoint, output_dir: Path, device: str) -> None:
        self.checkpoint = checkpoint
        self.jobs_dir = Path(output_dir) / JOBS_DIR
        self.device = device
        self.manager: JobManager | None = None
        self._local = threading.local()
        self.engines: list[GenerationEngine] = []
        """One per worker thread that has run a job; all over the same model object."""
        self.model_info = model_summary(checkpoint, device)

    def engine(self) -> GenerationEngine:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = GenerationEngine(self.checkpoint.model)
            self.engines.append(engine)
        return engine

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _progress(self, job: Job, **values: Any) -> None:
        if self.manager is not None:
            self.manager.update_progress(job, **values)
        else:
            job.progress.update(values)

    def __call__(self, job: Job) -> list[dict[str, Any]]:
        spec = job.request
        if job.work is None:
            raise RuntimeError("job has no work attached")
        context: str = job.work
        sampling = SamplingSettings(**spec["sampling"])
        limits = GenerationLimits(max_bars=spec.get("max_bars"), max_seconds=spec.get("max_seconds"))
        requests = [PieceRequest(context=context, seed=spec["seed"] + i) for i in range(spec["n"])]
        started = time.perf_counter()
        self._progress(job, phase="generating", done=0, total=len(requests), bars=0, chars=0,
                       chars_per_second=0.0, elapsed=0.0)

        def on_progress(event: Progress) -> None:
            job.check_cancelled()  # raising here unwinds the engine within one patch round
            self._progress(job, done=event.done, total=event.total, bars=event.bars, chars=event.chars,
                           chars_per_second=round(event.chars_per_second, 1),
                           elapsed=round(time.perf_counter() - started, 2))

        job.check_cancelled()
        results = generate_checked(self.engine(), requests, sampling, limits, retries=spec.get("retries", 0),
                                   batch_size=min(MAX_BATCH, len(requests)), progress=on_progress)
        directory = self.job_dir(job.id)
        directory.mkdir(parents=True, exist_ok=True)
        pieces = []
        for index, result in enumerate(results):
            job.check_cancelled()
            self._progress(job, phase="rendering", rendering=index + 1)
            piece = result.piece
            seed = result.attempts[-1].seed
            name = piece_name(index, result)
            manifest = piece_manifest(name, result, requests[index].seed, sampling, limits, self.model_info,
                                      job=job.id, prompt=spec.get("prompt"),
                                      continue_from=spec.get("continue_from"))
            with _RENDER_LOCK:
                manifest = write_piece(directory, name, result, list(OUTPUT_FORMATS), manifest)
            pieces.append({"name": name, "seed": seed, "valid": manifest["valid"], "error": manifest["error"],
                           "stop_reason": piece.stop_reason, "bars": piece.bars, "chars": len(piece.generated),
                           "retries": result.retries, "seconds": round(piece.seconds, 3),
                           "chars_per_second": round(piece.chars_per_second, 1),
                           "files": {**manifest["files"], "manifest": [f"{name}/{name}.json"]},
                           "skipped": manifest["skipped"]})
        self._progress(job, phase="finished", elapsed=round(time.perf_counter() - started, 2))
        return pieces


__all__ = ["PieceRunner", "JOBS_DIR"]
