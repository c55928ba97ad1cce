"""Outside judges: what the programs musicians use say about a piece.

"Valid" in this project means that these programs accept a piece, not only that our own checker agrees:

* `abc2midi` (abcmidi, run as `abc2midi FILE -NFER`): every warning or error it prints counts — bar-length
  warnings ("Bar N has X time units while the time signature has Y"), ties it cannot resolve, voices of different
  lengths;
* `abcm2ps` (run as `abcm2ps -q -c FILE`): every error or warning it prints counts, except line-fill notices
  ("Line underfull/overfull/too much shrunk", which are about page layout);
* music21, on the MusicXML: every part has the same number of measures, and every measure lasts its time
  signature (a shorter first measure and a last measure completing it excepted);
* mido, on the MIDI file: it reads it (key signatures within 7 sharps or flats, well-formed tracks).

A judge whose program or library is missing reports `available=False` and counts neither way.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Page layout, not music: how full a staff line is, or that a very dense bar had to be squeezed to fit the page.
_LAYOUT_NOTICE = re.compile(r"Line (?:underfull|overfull|too much shrunk)")
_IGNORED_DECORATION = re.compile(r"instruction !?[^ ]*!? ignored")
TIMEOUT = 60


@dataclass
class Verdict:
    """One judge's answer: whether it could run, whether it accepts the piece, and what it objected to."""

    judge: str
    available: bool
    accepted: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class JudgeReport:
    """All judges' answers; `accepted` when every available judge accepts."""

    verdicts: list[Verdict]

    @property
    def accepted(self) -> bool:
        return all(verdict.accepted for verdict in self.verdicts if verdict.available)

    def problems(self) -> list[str]:
        return [f"{verdict.judge}: {problem}" for verdict in self.verdicts for problem in verdict.problems]

    def to_dict(self) -> dict:
        return {"accepted": self.accepted,
                "judges": {v.judge: {"available": v.available, "accepted": v.accepted, "problems": v.problems}
                           for v in self.verdicts}}


def _run(program: str, arguments: list[str], abc_text: str) -> tuple[bool, list[str]]:
    """Run an ABC program on the text in a scratch folder: (available, output lines)."""
    executable = shutil.which(program)
    if executable is None:
        return False, []
    with tempfile.TemporaryDirectory(prefix="notagen-judge-") as folder:
        path = Path(folder) / "piece.abc"
        path.write_text(abc_text if abc_text.lstrip().startswith("X:") else "X:1\n" + abc_text, encoding="utf-8")
        try:
            result = subprocess.run([executable, str(path), *arguments], cwd=folder, capture_output=True,
                                    text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return True, [f"{program} ran longer than {TIMEOUT} s"]
    return True, (result.stdout + "\n" + result.stderr).splitlines()


def abc2midi_verdict(abc_text: str) -> Verdict:
    """abc2midi's warnings and errors (`-NFER`: fermatas do not lengthen notes, so voices stay together), except
    "instruction !tenuto! ignored": abc2midi names each notation-only decoration it does not play."""
    available, lines = _run("abc2midi", ["-NFER", "-o", "piece.mid"], abc_text)
    problems = [line.strip() for line in lines if re.search(r"\b(?:Warning|Error)\b", line)
                and not _IGNORED_DECORATION.search(line)]
    return Verdict("abc2midi", available, available and not problems, problems)


def abcm2ps_verdict(abc_text: str) -> Verdict:
    """abcm2ps's errors and warnings, page-layout notices aside. `-c` lets it break lines where they fit (an
    interleaved file has one bar per source line)."""
    available, lines = _run("abcm2ps", ["-q", "-c", "-O", "piece.ps"], abc_text)
    problems = [line.strip() for line in lines
                if re.search(r"\b(?:error|warning)\b", line, re.IGNORECASE) and not _LAYOUT_NOTICE.search(line)]
    return Verdict("abcm2ps", available, available and not problems, problems)


def music21_verdict(musicxml: str) -> Verdict:
    """music21 reads the MusicXML, every part has as many measures, and every measure fills its time signature
    (a pickup first measure and a last measure completing it excepted)."""
    try:
        from music21 import converter
    except ImportError:
        return Verdict("music21", False, False)
    try:
        score = converter.parseData(musicxml, format="musicxml")
    except Exception as error:  # music21 raises many unrelated types on malformed files
        return Verdict("music21", True, False, [f"cannot read the MusicXML: {type(error).__name__}: {error}"])
    problems = []
    counts = [len(part.getElementsByClass("Measure")) for part in score.parts]
    if len(set(counts)) > 1:
        problems.append(f"parts have different measure counts: {counts}")
    for number, part in enumerate(score.parts, start=1):
        measures = list(part.getElementsByClass("Measure"))
        lengths = [measure.duration.quarterLength for measure in measures]
        bars = [measure.barDuration.quarterLength for measure in measures]
        pickup = lengths[0] if measures and lengths[0] < bars[0] else None
        for index, (length, bar) in enumerate(zip(lengths, bars)):
            if length == bar or (index == 0 and pickup is not None):
                continue
            if length == 0 and not measures[index].notesAndRests:
                continue  # only invisible rests: abc2xml writes `<forward>`, which music21 keeps no element for
            if index == len(measures) - 1 and pickup is not None and length == bar - pickup:
                continue
            problems.append(f"part {number} measure {index + 1} lasts {length} quarter notes, its time signature "
                            f"{bar}")
    return Verdict("music21", True, not problems, problems[:20])


def midi_verdict(midi: bytes) -> Verdict:
    """mido reads the MIDI file."""
    try:
        import mido
    except ImportError:
        return Verdict("mido", False, False)
    try:
        mido.MidiFile(file=io.BytesIO(midi))
    except Exception as error:  # mido raises KeyError, ValueError, EOFError, OSError … on bad files
        return Verdict("mido", True, False, [f"cannot read the MIDI file: {type(error).__name__}: {error}"])
    return Verdict("mido", True, True)


def judge_abc(abc_text: str, musicxml: str | None = None, midi: bytes | None = None) -> JudgeReport:
    """Ask abc2midi and abcm2ps about the ABC, and music21 / mido about the MusicXML / MIDI when given."""
    verdicts = [abc2midi_verdict(abc_text), abcm2ps_verdict(abc_text)]
    if musicxml is not None:
        verdicts.append(music21_verdict(musicxml))
    if midi is not None:
        verdicts.append(midi_verdict(midi))
    return JudgeReport(verdicts)


__all__ = ["JudgeReport", "Verdict", "abc2midi_verdict", "abcm2ps_verdict", "judge_abc", "midi_verdict",
           "music21_verdict"]
