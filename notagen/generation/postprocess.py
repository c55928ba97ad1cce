"""From the model's text to checked ABC: strip prompt lines and `[r:]`, restore omitted rests, check validity,
and regenerate (with the next seed) the pieces that come out invalid.

The reference silently discards samples whose `rest_unreduce` raises and never checks the rest; here every attempt
is kept in the record with its reason, and validity (abc2xml parses it, every voice has the same bars, every bar's
voices have the same duration) is reported for the piece that is finally written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from notagen.errors import ConversionError
from notagen.generation.engine import GeneratedPiece, GenerationEngine, GenerationLimits, PieceRequest, Progress
from notagen.generation.sampling import SamplingSettings

_UNREDUCE_ERRORS = (ValueError, IndexError, KeyError, ZeroDivisionError, ConversionError)


@dataclass
class FinishedText:
    """A generated text in every ABC form, with its validity."""

    raw: str
    """The model's text: prompt lines, `[r:]` annotations, rest-reduced voices."""
    interleaved: str | None = None
    """Full interleaved ABC (X:1 first, no prompt lines, no `[r:]`, every voice on every line)."""
    standard: str | None = None
    musicxml: str | None = None
    validity: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def valid(self) -> bool:
        return bool(self.validity.get("valid", False))


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def format_problems(text: str) -> list[str]:
    """What makes a generated text not music in the model's format, whatever a converter makes of it.

    abc2xml (and `rest_unreduce`) quietly accept a body line with no voice segment, reading it as rests, so a
    model that writes noise can look "valid"; here every body line must hold a `[V:` segment and the text must be
    printable ASCII.
    """
    from notagen.abc.text import split_header_body, strip_prompt_lines, strip_stream_annotations

    problems = []
    bad = sorted({char for char in text if char != "\n" and not " " <= char <= "~"})
    if bad:
        shown = "".join(repr(char)[1:-1] for char in bad[:8])
        problems.append(f"{len(bad)} non-printable or non-ASCII character kind(s) ({shown})")
    _, body = split_header_body(strip_stream_annotations(strip_prompt_lines(text)))
    voiceless = [number for number, line in enumerate(body, start=1) if "[V:" not in line]
    if voiceless:
        problems.append(f"{len(voiceless)} of {len(body)} body lines have no voice (first: line {voiceless[0]})")
    return problems


def finish_text(text: str) -> FinishedText:
    """Post-process one generated text; never raises for bad music (the reason goes to `error`)."""
    from notagen.abc.check import check_abc
    from notagen.abc.interleave import define_voices_in_order, deinterleave, rest_unreduce
    from notagen.abc.text import declare_octave_accidentals, strip_prompt_lines
    from notagen.convert import abc_to_musicxml
    from notagen.render import set_instruments

    result = FinishedText(raw=text)
    body = strip_prompt_lines(text)
    if "[V:" not in body:
        result.error = "no music: the text has no voice lines"
        result.validity = {"valid": False, "parses": False, "error": result.error}
        return result
    try:
        interleaved = rest_unreduce(body)
    except _UNREDUCE_ERRORS as error:
        result.error = f"rest_unreduce failed: {_one_line(error)}"
        result.validity = {"valid": False, "parses": False, "error": result.error}
        return result
    if not interleaved.lstrip().startswith("X:"):
        interleaved = "X:1\n" + interleaved
    interleaved = declare_octave_accidentals(define_voices_in_order(interleaved))
    result.interleaved = interleaved
    try:
        result.musicxml = set_instruments(abc_to_musicxml(interleaved))[0]
        xml_error = None
    except ConversionError as error:
        xml_error = str(error)
    report = check_abc(interleaved, abc2xml_error=xml_error)
    result.validity = report.to_dict()
    if not report.parses:
        result.error = report.error
    try:
        result.standard = deinterleave(interleaved)
    except _UNREDUCE_ERRORS as error:
        result.error = result.error or f"de-interleaving failed: {_one_line(error)}"
    if not report.valid and result.error is None:
        result.error = report.error or (f"{report.misaligned_bars} of {report.bars} bars misaligned"
                                        if report.misaligned_bars else "voices have different bar counts")
    problems = format_problems(text)
    if problems:
        result.validity["valid"] = False
        result.validity["format_problems"] = problems
        result.error = "; ".join(problems) + (f"; {result.error}" if result.error else "")
    return result


@dataclass
class Attempt:
    """One try at a piece."""

    seed: int
    stop_reason: str
    valid: bool
    error: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "stop_reason": self.stop_reason, "valid": self.valid, "error": self.error,
                "seconds": round(self.seconds, 3)}


@dataclass
class PieceResult:
    """The piece finally kept (the first valid attempt, else the last one) and every attempt."""

    piece: GeneratedPiece
    finished: FinishedText
    attempts: list[Attempt]

    @property
    def retries(self) -> int:
        return len(self.attempts) - 1


def retry_seed(seed: int, attempt: int, stride: int) -> int:
    """Seed of retry `attempt` (1, 2, …): the next seed not used by any other piece of the same run."""
    return seed + attempt * max(1, stride)


def generate_checked(engine: GenerationEngine, requests: Sequence[PieceRequest],
                     sampling: SamplingSettings | None = None, limits: GenerationLimits | None = None,
                     retries: int = 3, batch_size: int = 1, progress: Any = None,
                     on_attempt: Any = None) -> list[PieceResult]:
    """Generate, post-process, and regenerate invalid pieces up to `retries` times with the next seed.

    Seeds of a run are consecutive (seed, seed+1, …), so retry k of a piece uses seed + k × len(requests).
    `on_attempt(index, attempt)` is called after every attempt (for logging).
    """
    requests = list(requests)
    kept: dict[int, PieceResult] = {}
    pending = list(range(len(requests)))
    current = {i: requests[i] for i in pending}
    for attempt in range(retries + 1):
        batch = [current[i] for i in pending]
        pieces = engine.generate(batch, sampling, limits, batch_size=batch_size,
                                 progress=_offset_progress(progress, len(requests) - len(pending)))
        for i, piece in zip(pending, pieces):
            piece = replace(piece, index=i)
            finished = finish_text(piece.text)
            record = Attempt(current[i].seed, piece.stop_reason, finished.valid, finished.error, piece.seconds)
            previous = kept[i].attempts if i in kept else []
            kept[i] = PieceResult(piece, finished, previous + [record])
            if on_attempt is not None:
                on_attempt(i, record)
        pending = [i for i in pending if not kept[i].finished.valid]
        if not pending or attempt == retries:
            break
        for i in pending:
            current[i] = replace(requests[i], seed=retry_seed(requests[i].seed, attempt + 1, len(requests)))
    return [kept[i] for i in range(len(requests))]


def _offset_progress(progress: Any, done_before: int) -> Any:
    if progress is None:
        return None

    def report(event: Progress) -> None:
        progress(replace(event, done=event.done + done_before, total=event.total + done_before))

    return report
