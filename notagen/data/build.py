"""`notagen data build`: scores → a verified, resumable training-data folder.

Per piece (in a worker process): source → MusicXML → standard ABC (xml2abc, NotaGen's options) → alignment check
→ interleaved ABC → round trip back to MusicXML and a note-event comparison with the source → the 15 transposed,
rest-reduced training texts. The parent discovers inputs, schedules pieces, writes each piece file atomically and
appends one line per piece to a journal (`.build/journal.jsonl`); the index, split and reports are derived from the
journal at the end, so an interrupted build (even `kill -9`) resumes where it stopped and re-running an unchanged
build converts nothing.

The split is per group, not per piece: a group is a work (all movements of a quartet, all sections of a mass; see
`notagen.data.sources`) joined with every work that holds a near-duplicate of one of its
pieces (`notagen.data.similarity`), so neither a movement nor the same tune in another collection can leak from
train into eval.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import os
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from notagen.abc.text import is_comment_line
from notagen.data.labels import LABEL_FIELDS, Labeller, load_label_rules
from notagen.data.similarity import group_pieces, near_duplicate_pairs
from notagen.data.sources import (
    CORPUS_SOURCE_PREFIX,
    Discovery,
    Job,
    Skip,
    dedupe_ids,
    discover_inputs,
    discover_music21_corpus,
)
from notagen.errors import ConversionError, InputError, NotaGenError
from notagen.io import atomic_write_json, atomic_write_text, content_hash, remove_stale_temporaries
from notagen.limits import (
    DEFAULT_LIMITS,
    LimitError,
    Limits,
    cli_limits,
    limit_this_process,
    scan_abc,
    use_limits,
)

PIPELINE_VERSION = "3"  # bump when conversion changes make old piece files stale (3: durations verified, melody prints)
JOURNAL = Path(".build") / "journal.jsonl"
RETRIED_KINDS = {"timeout", "worker crash"}  # load-dependent failures: tried again on the next run


class PieceTimeout(BaseException):
    """Raised in a worker when one piece runs past its time limit (a BaseException so that converters' own
    `except Exception` handlers cannot swallow it)."""


class PieceFailure(Exception):
    """A piece is excluded: `kind` is a short category for the report, the message the one-line reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass
class BuildOptions:
    max_chars: int | None = None
    keep_unverified: bool = False
    timeout: float = 300.0
    limits: Limits = DEFAULT_LIMITS
    """Bounds on each input (size, shape, memory); `timeout` is its wall-time bound."""

    def key_part(self) -> str:
        """The options that change a piece's outcome (part of its resume key)."""
        return f"max_chars={self.max_chars}|keep_unverified={self.keep_unverified}"


@dataclass
class BuildSummary:
    out: Path
    built: int
    failed: int
    excluded: int
    converted_now: int
    seconds: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- worker side


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise PieceTimeout in this (main) thread after `seconds`; no-op off the main thread or without SIGALRM."""
    usable = bool(seconds) and hasattr(signal, "setitimer") and _on_main_thread()
    if not usable:
        yield
        return

    def _expire(signum: int, frame: Any) -> None:
        raise PieceTimeout()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _on_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _merge_tunes_to_musicxml(path: str) -> str:
    """Josquin-style files hold one X: tune per voice: merge them into one score with music21."""
    from music21 import converter, stream
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    parsed = converter.parse(path)
    score = parsed.mergeScores() if isinstance(parsed, stream.Opus) else parsed
    if not isinstance(score, stream.Score) or not score.parts:
        raise PieceFailure("not a score", "voice-tunes could not be merged into one score")
    return GeneralObjectExporter(score).parse().decode("utf-8")


def normalise_for_dedup(interleaved: str) -> str:
    """Interleaved text without names, comments and spacing: two encodings of the same music compare equal."""
    lines = []
    for line in interleaved.splitlines():
        if is_comment_line(line):
            continue
        line = re.sub(r'\s(?:nm|snm)="[^"]*"', "", line)
        lines.append("".join(line.split()))
    return "\n".join(ln for ln in lines if ln)


def convert_piece(job: Job, options: BuildOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Convert and verify one piece. Returns (record fields, piece file); raises PieceFailure or NotaGenError."""
    from notagen.abc.interleave import check_alignment, interleave
    from notagen.abc.text import bar_count, clean_abc, original_key, voice_names
    from notagen.abc.transpose import KEYS, transpose
    from notagen.convert import abc_tune_to_musicxml, convert_musicxml, score_to_musicxml, verify_abc
    from notagen.data.dataset import original_key_name
    from notagen.data.movements import extract_movement
    from notagen.data.similarity import melody_shingles
    from notagen.events import musicxml_events

    try:
        if job.measures is not None:
            source_xml = extract_movement(score_to_musicxml(job.path), *job.measures)
        elif job.merge_tunes:
            source_xml = _merge_tunes_to_musicxml(job.path)
        elif job.text is not None:
            scan_abc(job.text, Path(job.path).name)
            source_xml = abc_tune_to_musicxml(job.text)
        else:
            source_xml = score_to_musicxml(job.path)
    except LimitError as error:
        raise PieceFailure("limit", _strip_path(error, job.path)) from error
    except (NotaGenError, ValueError) as error:
        raise PieceFailure("parse error", f"parse error: {_strip_path(error, job.path)}") from error
    source_events = musicxml_events(source_xml)
    if not source_events:
        raise PieceFailure("empty", "empty score (no notes)")
    # One MusicXML text feeds both the ABC conversion and the verification, so they judge the same score.
    try:
        conversion = convert_musicxml(source_xml, name=Path(job.path).name)
        standard = clean_abc(conversion.abc)
    except NotaGenError as error:
        raise PieceFailure("parse error", f"ABC conversion failed: {_strip_path(error, job.path)}") from error

    _barlines_equal, bar_numbers_equal, _durations_equal = check_alignment(standard)
    if not bar_numbers_equal:
        raise PieceFailure("unequal bars", "unequal bar counts across voices")
    interleaved = interleave(standard)
    if options.max_chars and len(interleaved) > options.max_chars:
        raise PieceFailure("too long", f"too long: {len(interleaved)} chars > --max-chars {options.max_chars}")

    try:   # the same check as `notagen convert`: every note's pitch, onset and duration
        check = verify_abc(source_xml, interleaved, conversion)
    except NotaGenError as error:
        verified, verification = False, f"round trip failed: {error}"
    else:
        verified, verification = check.exact, "exact" if check.exact else check.summary()
    if not verified and not options.keep_unverified:
        raise PieceFailure("round-trip loss", verification)

    source_key = original_key(standard)
    try:
        original_key_name({"key": source_key})  # the reader must find the piece's own key signature
    except ValueError as error:
        raise PieceFailure("parse error", f"unsupported key K:{source_key} ({error})") from error
    keys = {key: interleave(transpose(standard, key), reduce_rests=True) for key in KEYS}
    record = {
        "key": source_key,
        "bars": bar_count(interleaved),
        "voices": len(voice_names(standard)),
        "chars": len(interleaved),
        "verified": verified,
        "verification": verification,
        "norm": content_hash(normalise_for_dedup(interleaved)),
        "melody": melody_shingles(source_events),
    }
    return record, {"standard": standard, "interleaved": interleaved, "keys": keys}


def _strip_path(error: Exception, path: str) -> str:
    """Converter messages start with the file's path; the report line names the source already."""
    message = str(error)
    for prefix in (f"{path}: ", f"{Path(path).name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def build_piece(job: Job, options: BuildOptions) -> dict[str, Any]:
    """Worker entry point: never raises for a bad piece; returns {"status": "ok"|"failed", ...}."""
    started = time.perf_counter()
    result: dict[str, Any] = {"id": job.piece_id, "source": job.source}
    try:
        with _deadline(options.timeout), use_limits(options.limits):
            record, piece = convert_piece(job, options)
        result.update(status="ok", record=record, piece=piece)
    except PieceTimeout:
        result.update(status="failed", kind="timeout", reason=f"timeout after {options.timeout:g} s")
    except PieceFailure as failure:
        result.update(status="failed", kind=failure.kind, reason=str(failure))
    except NotaGenError as error:
        result.update(status="failed", kind="parse error", reason=f"parse error: {error}")
    except RecursionError:
        result.update(status="failed", kind="parse error", reason="parse error: recursion too deep")
    except MemoryError:
        result.update(status="failed", kind="limit",
                      reason=f"over the {options.limits.max_memory_mb} MB memory limit (--max-memory-mb)")
    except Exception as error:  # noqa: BLE001 - third-party converters raise anything; record it, go on
        message = str(error).splitlines()[0][:200] if str(error) else ""
        result.update(status="failed", kind="parse error", reason=f"parse error: {type(error).__name__}: {message}")
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _worker_init(limits: Limits = DEFAULT_LIMITS) -> None:
    # Workers must not fight the parent for Ctrl-C, die with it, are bounded in memory, and numeric libraries must
    # not spawn thread pools each.
    limit_this_process(limits)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ----------------------------------------------------------------------------------------------- parent side


def job_key(job: Job, options: BuildOptions) -> str:
    """Resume key: the input's content, where it goes, and the options that change the outcome."""
    return content_hash(f"{PIPELINE_VERSION}|{job.piece_id}|{job.hash}|{job.format}|{job.merge_tunes}|"
                        f"{options.key_part()}")


class Journal:
    """Append-only record of finished pieces (one JSON line each); the last line of a job wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a kill: that piece is simply built again
                    if isinstance(entry, dict) and "job" in entry:
                        self.entries[entry["job"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._handle = path.open("a", encoding="utf-8")
        if needs_newline:
            self._handle.write("\n")

    def append(self, entry: dict[str, Any]) -> None:
        self.entries[entry["job"]] = entry
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()

    def compact(self, keep: set[str]) -> None:
        """Rewrite the journal with only the current jobs' entries."""
        self._handle.close()
        lines = [json.dumps(e, ensure_ascii=False) for k, e in self.entries.items() if k in keep]
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        self._handle = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._handle.close()


def split_of(group: str, seed: int, eval_fraction: float) -> str:
    """Split of a group (a work and its near-duplicates) from a hash of (seed, group name): adding pieces never moves
    the others, unless a new piece joins two groups into one."""
    return "eval" if _split_score(group, seed) < eval_fraction else "train"


def _split_score(group: str, seed: int) -> float:
    import hashlib

    return int(hashlib.sha256(f"{seed}/{group}".encode()).hexdigest()[:12], 16) / 16**12


WATCHDOG_GRACE = 30.0  # seconds past a piece's own deadline before the parent kills its worker


def _run_pool(jobs: list[Job], options: BuildOptions, workers: int,
              worker: Callable[[Job, BuildOptions], dict[str, Any]] = build_piece) -> Iterator[dict[str, Any]]:
    """Results as they finish, from worker processes bounded by `options.limits` that die with this process.

    At most 2 jobs per worker are in flight. A piece runs out its time in the worker (`_deadline`); a worker stuck
    past that (in C code an alarm cannot interrupt) is killed by this parent. When a worker dies (segfault, memory
    limit, the watchdog) the jobs in flight are suspects: each is run again alone, and only the one that kills its
    worker again is reported, as a crash or a timeout."""
    from notagen.limits import _worker_context

    context = _worker_context()
    pending = list(reversed(jobs))
    suspects: list[Job] = []
    patience = options.timeout + WATCHDOG_GRACE if options.timeout else None
    while pending:
        executor = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                               initargs=(options.limits,), max_tasks_per_child=200)
        in_flight: dict[futures.Future[dict[str, Any]], Job] = {}
        running_since: dict[futures.Future[dict[str, Any]], float] = {}
        broken = False
        try:
            while (pending and not broken) or in_flight:
                while pending and not broken and len(in_flight) < 2 * workers:
                    job = pending.pop()
                    in_flight[executor.submit(worker, job, options)] = job
                done, _ = futures.wait(in_flight, timeout=1.0, return_when=futures.FIRST_COMPLETED)
                now = time.monotonic()
                for future in in_flight:
                    if future not in running_since and future.running():
                        running_since[future] = now
                if patience is not None and not done and any(now - since > patience
                                                             for since in running_since.values()):
                    _kill_workers(executor)   # a worker stuck past its deadline: the pool breaks, suspects rerun
                for future in done:
                    job = in_flight.pop(future)
                    running_since.pop(future, None)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(job)
                        continue
                    yield result
        finally:
            if broken or in_flight:   # a dead pool, or this generator closed early (an error, Ctrl-C): no waiting
                _kill_workers(executor)
            executor.shutdown(wait=True, cancel_futures=True)
    for job in suspects:
        yield _run_alone(job, options, worker, context)


def _kill_workers(executor: futures.ProcessPoolExecutor) -> None:
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


def _run_alone(job: Job, options: BuildOptions, worker: Callable[[Job, BuildOptions], dict[str, Any]],
               context: Any) -> dict[str, Any]:
    """One job in its own worker process: if that process dies, this job is the cause."""
    executor = futures.ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init,
                                           initargs=(options.limits,))
    failed = {"id": job.piece_id, "source": job.source, "status": "failed", "seconds": 0.0}
    try:
        return executor.submit(worker, job, options).result(
            timeout=options.timeout + WATCHDOG_GRACE if options.timeout else None)
    except futures.TimeoutError:
        _kill_workers(executor)
        return {**failed, "kind": "timeout", "reason": f"timeout after {options.timeout:g} s (worker killed)"}
    except BrokenProcessPool:
        return {**failed, "kind": "worker crash",
                "reason": f"worker process died on this piece (crash, or over the {options.limits.max_memory_mb} MB "
                          "memory limit)"}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _piece_path(out: Path, piece_id: str) -> Path:
    return out / "pieces" / f"{piece_id}.json"


def _entry_complete(out: Path, entry: dict[str, Any]) -> bool:
    """A journal 'ok' entry counts only while its piece file is there, whole (same size as written)."""
    path = _piece_path(out, entry["id"])
    try:
        return path.stat().st_size == entry.get("bytes")
    except OSError:
        return False


def _winners(jobs: list[Job], entries: dict[str, dict[str, Any]], keys: dict[str, str]) -> dict[str, str]:
    """Dedupe built pieces by normalised interleaved text, first in input order wins: {loser id: winner id}."""
    first_by_norm: dict[str, str] = {}
    losers: dict[str, str] = {}
    for job in jobs:
        entry = entries.get(keys[job.piece_id])
        if not entry or entry.get("status") != "ok":
            continue
        norm = entry["record"]["norm"]
        if norm in first_by_norm:
            losers[job.piece_id] = first_by_norm[norm]
        else:
            first_by_norm[norm] = job.piece_id
    return losers


def _exclude_exact_duplicates(discovery: Discovery) -> list[Job]:
    """Same input read the same way twice (a copied file, a repeated tune): keep the first in input order. Copies
    read another way (another extension, so another format) are all converted: the first may fail where a later one
    builds, and `_winners` then keeps the first copy that converted."""
    first: dict[tuple[str, str, bool], Job] = {}
    jobs = []
    for job in discovery.jobs:
        same = (job.hash, job.format, job.merge_tunes)
        if same in first:
            discovery.skips.append(Skip(job.source, job.collection, f"duplicate of {first[same].source} "
                                                                    "(same content)"))
            continue
        first[same] = job
        jobs.append(job)
    return jobs


def _kind_of_skip(skip: Skip) -> str:
    if skip.policy:
        return "excluded"
    reason = skip.reason
    if "limit" in reason and ("(--max-" in reason or "limit of" in reason):
        return "limit"
    for prefix, kind in (("duplicate", "duplicate"), ("empty", "empty"), ("too large", "too large"),
                         ("corrupt", "corrupt"), ("binary", "binary"), ("not XML", "not a score"),
                         ("not a score", "not a score"), ("no such", "missing"), ("unreadable", "unreadable"),
                         ("no MusicXML", "no MusicXML"),
                         ("unsupported", "unsupported")):
        if reason.startswith(prefix):
            return kind
    return "unreadable"


def build_dataset(
    inputs: list[str | Path] | None = None,
    out: str | Path = "dataset",
    corpus: str | None = None,
    labels: str | Path | None = None,
    workers: int | None = None,
    include_essen: bool = False,
    keep_unverified: bool = False,
    eval_fraction: float = 0.1,
    seed: int = 0,
    max_chars: int | None = None,
    timeout: float = 300.0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    retry_failed: bool = False,
    limits: Limits | None = None,
) -> BuildSummary:
    """Build (or resume) a dataset folder; see `build_command` for the options. Never raises for a bad piece."""
    started = time.perf_counter()
    out = Path(out)
    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"--eval-fraction must be in [0, 1): {eval_fraction}")
    if corpus not in (None, "music21"):
        raise InputError(f"unknown corpus {corpus!r}: only 'music21' is bundled")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out is a file, not a folder: {out}")
    user_rules = load_label_rules(labels) if labels else []
    labeller = Labeller(user_rules, builtin_music21=corpus == "music21")
    limits = (limits or DEFAULT_LIMITS).scaled(max_seconds=timeout)
    options = BuildOptions(max_chars=max_chars, keep_unverified=keep_unverified, timeout=timeout, limits=limits)

    with use_limits(limits):   # discovery reads each file once (hash, outline): the same bounds hold there
        discovery = discover_inputs(list(inputs or []))
    if corpus == "music21":
        corpus_part = discover_music21_corpus(include_essen=include_essen)
        discovery.jobs.extend(corpus_part.jobs)
        discovery.skips.extend(corpus_part.skips)
    discovery.jobs = dedupe_ids(discovery.jobs)
    jobs = _exclude_exact_duplicates(discovery)
    corpus_jobs = {j.piece_id for j in jobs if j.source.startswith(CORPUS_SOURCE_PREFIX)}

    tqdm_write = _tqdm_write()
    say = log or tqdm_write
    for skip in discovery.skips:
        if not skip.policy:
            say(f"{skip.source}: {skip.reason}")

    (out / "pieces").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # temp files of atomic writes cut short by a kill
    journal = Journal(out / JOURNAL)
    keys = {job.piece_id: job_key(job, options) for job in jobs}
    try:
        losers = _winners(jobs, journal.entries, keys)
        todo = []
        for job in jobs:
            entry = journal.entries.get(keys[job.piece_id])
            if entry is None or (entry["status"] == "failed" and (retry_failed or entry.get("kind") in RETRIED_KINDS)):
                todo.append(job)
            elif entry["status"] == "ok" and job.piece_id not in losers and not _entry_complete(out, entry):
                todo.append(job)
        # Largest inputs first: the long pieces start early instead of forming a tail at the end.
        todo.sort(key=lambda j: -(len(j.text) if j.text is not None else _size(j.path)))
        workers = max(1, workers or _available_cores())
        runner = _run_pool(todo, options, min(workers, max(1, len(todo))))
        by_id = {job.piece_id: job for job in jobs}
        bar = _progress(len(todo), progress)
        for result in runner:
            job = by_id[result["id"]]
            entry = {"job": keys[job.piece_id], "id": job.piece_id, "status": result["status"],
                     "seconds": result.get("seconds")}
            if result["status"] == "ok":
                path = atomic_write_json(_piece_path(out, job.piece_id), result["piece"], indent=None)
                entry.update(record=result["record"], bytes=path.stat().st_size,
                             chars=len(result["piece"]["interleaved"]))
            else:
                entry.update(kind=result["kind"], reason=result["reason"])
                say(f"{job.source}: {result['reason']}")
            journal.append(entry)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        summary = _finalise(out, jobs, discovery.skips, journal, keys, labeller, corpus_jobs, options,
                            eval_fraction, seed, converted_now=len(todo), started=started,
                            build_options={"inputs": [str(i) for i in inputs or []], "corpus": corpus,
                                           "labels": str(labels) if labels else None, "workers": workers,
                                           "include_essen": include_essen, "keep_unverified": keep_unverified,
                                           "eval_fraction": eval_fraction, "seed": seed, "max_chars": max_chars,
                                           "timeout": timeout,
                                           "music21_version": _music21_version() if corpus else None})
        journal.compact(set(keys.values()))
    finally:
        journal.close()
    return summary


def _label_key(labels: dict[str, str] | None) -> str:
    return " / ".join(labels[f] for f in LABEL_FIELDS) if labels else "(unlabelled)"


def _finalise(out: Path, jobs: list[Job], skips: list[Skip], journal: Journal, keys: dict[str, str],
              labeller: Labeller, corpus_jobs: set[str], options: BuildOptions, eval_fraction: float, seed: int,
              converted_now: int, started: float, build_options: dict[str, Any]) -> BuildSummary:
    """Derive index, split, reports and manifest from the journal (the same journal always gives the same index)."""
    losers = _winners(jobs, journal.entries, keys)
    source_of = {job.piece_id: job.source for job in jobs}
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    melodies: dict[str, list[int]] = {}
    for job in jobs:
        labels = labeller.labels_for(job.rel, job.path, corpus=job.piece_id in corpus_jobs, metadata=job.labels)
        entry = journal.entries.get(keys[job.piece_id])
        problem = {"source": job.source, "collection": job.collection, "labels": _label_key(labels)}
        if entry is None:
            failures.append({**problem, "kind": "not built", "reason": "not built (build interrupted?)"})
            continue
        if entry["status"] != "ok":
            failures.append({**problem, "kind": entry["kind"], "reason": entry["reason"]})
            continue
        if job.piece_id in losers:
            failures.append({**problem, "kind": "duplicate",
                             "reason": f"duplicate of {source_of[losers[job.piece_id]]} (same interleaved text)"})
            _piece_path(out, job.piece_id).unlink(missing_ok=True)
            continue
        fields = entry["record"]
        record = {
            "id": job.piece_id, "source": job.source, "collection": job.collection, "licence": job.licence,
            "labels": labels,
            "key": fields["key"], "bars": fields["bars"], "voices": fields["voices"], "chars": fields["chars"],
            "split": "train", "hash": job.hash, "verified": fields["verified"],
            "repository": job.repository, "commit": job.commit, "path": job.repo_path or job.source,
            "work": job.work or job.piece_id, "group": "", "movement": job.movement, "title": job.title or None,
        }
        if not labels and job.label_note:
            record["label_note"] = job.label_note
        if not fields["verified"]:
            record["verification"] = fields["verification"]
        records.append(record)
        melodies[job.piece_id] = fields.get("melody") or []
    near = near_duplicate_pairs(melodies)
    groups = group_pieces({r["id"]: r["work"] for r in records}, near)
    for record in records:
        record["group"] = groups[record["id"]]
        record["split"] = split_of(record["group"], seed, eval_fraction)
    if eval_fraction > 0 and len({r["group"] for r in records}) >= 2 and not any(r["split"] == "eval"
                                                                                for r in records):
        # Tiny datasets: the hash put nothing in eval; take the group closest to the threshold.
        chosen = min((r["group"] for r in records), key=lambda g: _split_score(g, seed))
        for record in records:
            if record["group"] == chosen:
                record["split"] = "eval"

    # Piece files not in the index (removed inputs, changed options) are stale.
    wanted = {r["id"] for r in records}
    for path in (out / "pieces").glob("*.json"):
        if path.stem not in wanted:
            path.unlink(missing_ok=True)

    skipped = [{"source": s.source, "collection": s.collection, "labels": _label_key(None), "kind": _kind_of_skip(s),
                "reason": s.reason} for s in skips]
    counts: dict[str, dict[str, int]] = defaultdict(Counter)  # type: ignore[arg-type]
    for item in skipped + failures:
        kind = item["kind"]
        counts[item["collection"]][kind if kind in ("excluded", "duplicate") else "failed"] += 1
    for record in records:
        bucket = counts[record["collection"]]
        bucket["built"] += 1
        bucket[record["split"]] += 1
        bucket["labelled"] += bool(record["labels"])
        bucket["unverified"] += not record["verified"]
        bucket["bars"] += record["bars"]
        bucket["chars"] += record["chars"]
    for bucket in counts.values():
        bucket["inputs"] = sum(bucket[k] for k in ("built", "failed", "duplicate", "excluded"))
    counts_plain = {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}
    problems = [f for f in failures + skipped if f["kind"] != "excluded"]
    reasons = Counter(item["kind"] for item in failures + skipped)
    totals = {"built": len(records), "train": sum(r["split"] == "train" for r in records),
              "eval": sum(r["split"] == "eval" for r in records),
              "labelled": sum(bool(r["labels"]) for r in records),
              "unverified": sum(not r["verified"] for r in records),
              "failed": sum(f["kind"] != "duplicate" for f in problems),
              "duplicate": sum(f["kind"] == "duplicate" for f in problems),
              "excluded": sum(f["kind"] == "excluded" for f in skipped),
              "bars": sum(r["bars"] for r in records),
              "chars": sum(r["chars"] for r in records),
              "works": len({r["work"] for r in records}), "groups": len({r["group"] for r in records})}

    atomic_write_text(out / "index.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report = {"totals": totals, "reasons": dict(sorted(reasons.items())), "collections": counts_plain,
              "labels": _label_table(records, problems),
              "label_totals": _label_table(records, problems, by_collection=False),
              "grouping": _grouping_summary(records, near),
              "failures": failures + [s for s in skipped if s["kind"] != "excluded"],
              "excluded": [s for s in skipped if s["kind"] == "excluded"]}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", _report_markdown(report))
    from notagen import __version__

    seconds = time.perf_counter() - started
    atomic_write_json(out / "manifest.json", {
        "format": "notagen-dataset", "format_version": 1, "pipeline_version": PIPELINE_VERSION,
        "notagen_version": __version__, "options": build_options, "counts": totals,
        "collections": counts_plain, "sources": _source_list(records), "keys": _key_list(),
        "last_build": {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "seconds": round(seconds, 1), "converted": converted_now},
    })
    return BuildSummary(out=out, built=len(records), failed=totals["failed"], excluded=totals["excluded"],
                        converted_now=converted_now, seconds=seconds, counts=counts_plain)


LABEL_TRAIN_TARGET = 20  # train pieces a label needs before fine-tuning on it is worth reporting as "usable"


def _label_table(records: list[dict[str, Any]], problems: list[dict[str, Any]],
                 by_collection: bool = True) -> list[dict[str, Any]]:
    """One row per (collection, label), or per label over all collections: pieces built (train / eval), bars,
    characters, refusals by kind."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(collection: str, label: str) -> dict[str, Any]:
        key = (collection if by_collection else "", label)
        if key not in rows:
            where = {"collection": collection} if by_collection else {"collections": []}
            rows[key] = {**where, "label": label, "built": 0, "train": 0, "eval": 0, "bars": 0, "chars": 0,
                         "refused": {}}
        if not by_collection and collection not in rows[key]["collections"]:
            rows[key]["collections"].append(collection)
        return rows[key]

    for record in records:
        item = row(record["collection"], _label_key(record["labels"]))
        item["built"] += 1
        item[record["split"]] += 1
        item["bars"] += record["bars"]
        item["chars"] += record["chars"]
    for problem in problems:
        refused = row(problem["collection"], problem.get("labels") or _label_key(None))["refused"]
        refused[problem["kind"]] = refused.get(problem["kind"], 0) + 1
    if by_collection:
        return sorted(rows.values(), key=lambda r: (r["collection"], r["label"] == "(unlabelled)", -r["train"],
                                                    r["label"]))
    for item in rows.values():
        item["collections"].sort()
    return sorted(rows.values(), key=lambda r: (r["label"] == "(unlabelled)", -r["train"], r["label"]))


def _grouping_summary(records: list[dict[str, Any]], near: list[tuple[str, str, float]]) -> dict[str, Any]:
    """How the split units were formed: works, near-duplicate pairs, and the largest groups (to spot a bad join)."""
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        members[record["group"]].append(record)
    joined = {g: m for g, m in members.items() if len({r["work"] for r in m}) > 1}
    largest = sorted(joined.items(), key=lambda item: -len(item[1]))[:10]
    return {"near_duplicate_pairs": len(near), "groups_joining_works": len(joined),
            "pieces_in_joined_groups": sum(len(m) for m in joined.values()),
            "largest": [{"group": g, "pieces": len(m), "works": len({r["work"] for r in m}),
                         "collections": sorted({r["collection"] for r in m}),
                         "examples": sorted(r["source"] for r in m)[:3]} for g, m in largest],
            "pairs": [list(pair) for pair in near]}


def _source_list(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (collection, repository, commit, licence) the dataset was built from, with its piece count."""
    sources: Counter[tuple[Any, ...]] = Counter(
        (r["collection"], r.get("repository"), r.get("commit"), r["licence"]) for r in records)
    return [{"collection": c, "repository": repo, "commit": commit, "licence": licence, "pieces": n}
            for (c, repo, commit, licence), n in sorted(sources.items(), key=lambda item: str(item[0]))]


def _music21_version() -> str:
    import music21

    return str(music21.__version__)


def _key_list() -> list[str]:
    from notagen.abc.transpose import KEYS

    return list(KEYS)


def _refused(row: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(row["refused"].items())) or "-"


def _report_markdown(report: dict[str, Any]) -> str:
    totals = report["totals"]
    grouping = report["grouping"]
    usable = [r for r in report["label_totals"] if r["label"] != "(unlabelled)" and r["train"] >= LABEL_TRAIN_TARGET]
    lines = ["# Dataset build report", "",
             f"Built **{totals['built']}** pieces ({totals['train']} train / {totals['eval']} eval, "
             f"{totals['labelled']} labelled, {totals['unverified']} unverified kept), {totals['bars']} bars, "
             f"{totals['chars']} chars, from {totals['works']} works in {totals['groups']} split groups. "
             f"Failed: {totals['failed']}; duplicates: {totals['duplicate']}; excluded by policy: "
             f"{totals['excluded']}.", "",
             f"Labels with at least {LABEL_TRAIN_TARGET} train pieces (all collections): **{len(usable)}**.", "",
             "## Per label (all collections)", "",
             "| period / composer / instrumentation | collections | built | train | eval | bars | chars | refused |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["label_totals"]:
        lines.append(f"| {row['label']} | {', '.join(row['collections'])} | {row['built']} | {row['train']} | "
                     f"{row['eval']} | {row['bars']} | {row['chars']} | {_refused(row)} |")
    lines += ["", "## Per collection", "",
             "| collection | inputs | built | train | eval | labelled | bars | chars | failed | duplicate | excluded |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in report["collections"].items():
        lines.append(f"| {name} | " + " | ".join(str(c.get(k, 0)) for k in (
            "inputs", "built", "train", "eval", "labelled", "bars", "chars", "failed", "duplicate", "excluded")) + " |")
    lines += ["", "## Per collection and label", "",
              "| collection | period / composer / instrumentation | built | train | eval | bars | chars | refused |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report["labels"]:
        lines.append(f"| {row['collection']} | {row['label']} | {row['built']} | {row['train']} | {row['eval']} | "
                     f"{row['bars']} | {row['chars']} | {_refused(row)} |")
    lines += ["", "## Split groups", "",
              f"{grouping['near_duplicate_pairs']} near-duplicate pairs joined {grouping['groups_joining_works']} "
              f"groups of several works ({grouping['pieces_in_joined_groups']} pieces). Largest:", ""]
    lines += [f"* {g['pieces']} pieces, {g['works']} works ({', '.join(g['collections'])}), e.g. "
              + ", ".join(f"`{e}`" for e in g["examples"]) for g in grouping["largest"]] or ["None."]
    lines += ["", "## Reasons", "", "| reason | count |", "|---|---|"]
    lines += [f"| {kind} | {count} |" for kind, count in report["reasons"].items()]
    lines += ["", "## Failures and duplicates", ""]
    lines += [f"* `{f['source']}`: {f['reason']}" for f in report["failures"]] or ["None."]
    lines += ["", "## Excluded by policy", ""]
    lines += [f"* `{f['source']}`: {f['reason']}" for f in report["excluded"]] or ["None."]
    return "\n".join(lines) + "\n"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _tqdm_write() -> Callable[[str], None]:
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda message: print(message, file=sys.stderr)
    return lambda message: tqdm.write(message, file=sys.stderr)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, unit="piece", desc="building", file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.5 if interactive else 30.0, smoothing=0.05)


def build_command(
    inputs: list[str],
    out: str = "",
    corpus: Literal["music21"] | None = None,
    labels: str | None = None,
    workers: int | None = None,
    include_essen: bool = False,
    keep_unverified: bool = False,
    strict: bool = False,
    eval_fraction: float = 0.1,
    seed: int = 0,
    max_chars: int | None = None,
    timeout: float = 300.0,
    retry_failed: bool = False,
    progress: bool = True,
    max_input_mb: float | None = None,
    max_unpacked_mb: float | None = None,
    max_voices: int | None = None,
    max_notes_per_bar: int | None = None,
    max_memory_mb: int | None = None,
) -> int:
    """Build a verified training dataset (interleaved ABC in 15 keys) from scores.

    Inputs are files and folders of MusicXML (.xml, .musicxml, .mxl), ABC (.abc; every X: tune of a multi-tune
    file is a piece) and Humdrum (.krn), and/or the music21 corpus. A MusicXML file holding several movements
    gives one piece per movement. A clone of an OpenScore collection (Lieder, String Quartets: a `scores/` folder
    and `data/composers.tsv`) is read with its metadata: every piece is labelled (period from the composer's
    dates, composer "Last, First", instrumentation from the parts) and records the repository, commit and path.
    Each piece is converted to NotaGen's ABC, converted back, and kept only if its note events (onset, pitch,
    duration) match the source. The eval split takes whole groups: a work (all its movements) with every work
    holding a near-duplicate of one of its pieces. Re-running resumes: pieces already built are not converted
    again. Every failure is printed as one line and listed in DIR/report.json; DIR/report.md counts pieces,
    refusals, bars and characters per collection and label; the build goes on.

    Args:
        inputs: score files and folders (may be empty with --corpus).
        out: the dataset folder to write (created; reused to resume).
        corpus: also build a bundled corpus: "music21" (offline; Essen excluded unless --include-essen).
        labels: YAML or CSV mapping file: path glob pattern → period, composer, instrumentation.
        workers: worker processes (default: all cores).
        include_essen: include the Essen folksongs (non-commercial licence) from the music21 corpus.
        keep_unverified: keep pieces whose round trip loses notes (flagged "verified": false in the index).
        strict: exit non-zero if any input failed.
        eval_fraction: fraction of groups (works and their near-duplicates) in the eval split; stable under
            additions.
        seed: split seed.
        max_chars: exclude pieces whose interleaved ABC is longer than this (default: no limit).
        timeout: seconds allowed per piece before it is reported as "timeout".
        retry_failed: convert again the pieces that failed in an earlier run (e.g. after a converter fix);
            timeouts and worker crashes are always retried.
        progress: show a progress bar.
        max_input_mb: refuse an input file larger than this (default 20; 0: no bound).
        max_unpacked_mb: refuse an .mxl whose archive directory announces more than this unpacked (default 100).
        max_voices: refuse a piece with more voices (default 128).
        max_notes_per_bar: refuse a piece with more notes in one bar of one voice or part (default 1024).
        max_memory_mb: memory bound of each worker process (default 4096); a piece past it fails alone.

    Every piece is converted in a worker process bounded by these limits and --timeout, which dies with the
    build; a limit hit is reported in one line naming it.

    Examples:
        notagen data build --corpus music21 --out data/music21 --workers 2
        notagen data build Lieder StringQuartets --corpus music21 --out data/real
        notagen data build scores/ more/tune.abc --out data/mine --labels labels.yaml --strict
    """
    if not out:
        raise InputError("--out DIR is required")
    if not inputs and not corpus:
        raise InputError("nothing to build: give score files/folders or --corpus music21")
    summary = build_dataset(inputs, out, corpus=corpus, labels=labels, workers=workers,
                            include_essen=include_essen, keep_unverified=keep_unverified,
                            eval_fraction=eval_fraction, seed=seed, max_chars=max_chars, timeout=timeout,
                            progress=progress, retry_failed=retry_failed,
                            limits=cli_limits(max_input_mb, max_unpacked_mb, max_voices, max_notes_per_bar,
                                              timeout, max_memory_mb))
    print(f"built {summary.built} pieces into {summary.out} ({summary.converted_now} converted now, "
          f"{summary.failed} failed, {summary.excluded} excluded by policy, {summary.seconds:.1f} s); "
          f"see {summary.out / 'report.md'}")
    if summary.built == 0:
        raise ConversionError(f"nothing could be built into {summary.out}: see {summary.out / 'report.md'}")
    if strict and summary.failed:
        print(f"notagen: --strict: {summary.failed} input(s) failed", file=sys.stderr)
        return 1
    return 0


__all__ = ["BuildOptions", "BuildSummary", "build_command", "build_dataset", "build_piece", "convert_piece",
           "job_key", "normalise_for_dedup", "split_of"]
