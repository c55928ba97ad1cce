"""Run `notagen convert` over a folder of per-feature MusicXML files and count what happens to each.

Every file (`.xml`, `.musicxml`, `.mxl`) is converted to standard and to interleaved ABC with verification on,
exactly as `notagen convert` does, and each outcome is one of:

* faithful: written, and the ABC read back has every note of the source (pitch, onset, duration);
* refused: not written, with a one-line reason (a feature ABC cannot carry, or what the verification found changed);
* silently damaged: written although the music changed, found by two checks independent of the verification:
  music21's reading of the source against music21's reading of the written ABC (read back by abc2xml), where
  music21 reads the source itself as we do (it does not on notation-only ties, empty bars, a trailing <forward>…;
  those are counted apart), and, for standard ABC, the ABC file read back the way
  `notagen convert FILE.abc OUT.musicxml` reads it, against the source;
* traceback: any other exception (a bug), or a conversion taking more than `--timeout` seconds.

The same run also converts every file the way the pipeline did before (abctoolkit's xml2abc and abc2xml as shipped,
no repairs) and verifies that the same way, as the baseline: faithful / damaged / failed.

    python benchmarks/convert_suite.py FOLDER [--timeout 120] [--out benchmarks/results/convert_suite.json]

A suite to run it on: the MusicXML test suite of LilyPond (input/regression/musicxml in
https://github.com/lilypond/lilypond, MIT licence), one small file per notation feature.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import time
import traceback
from collections import Counter
from contextlib import redirect_stderr
from fractions import Fraction
from pathlib import Path

from notagen.convert import (
    XML2ABC_OPTIONS,
    _xml_text,
    convert_score,
    prepare_abc_for_abc2xml,
    read_abc_tune,
    score_to_musicxml,
)
from notagen.errors import NotaGenError
from notagen.events import match_events, musicxml_events
from notagen.musicxml import prepare_musicxml

RESULTS = Path(__file__).parent / "results" / "convert_suite.json"
SUFFIXES = (".xml", ".musicxml", ".mxl")


class Timeout(BaseException):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Timeout()


def music21_events(xml: str) -> list[tuple[Fraction, int, Fraction]]:
    """Note events as music21 reads them (ties merged, grace notes left out): the independent check."""
    from music21 import converter, harmony

    score = converter.parse(xml, format="musicxml").stripTies()
    events = []
    for item in score.recurse().notes:
        if item.duration.isGrace or isinstance(item, harmony.ChordSymbol):   # chord symbols are not notes
            continue
        onset = Fraction(item.getOffsetInHierarchy(score)).limit_denominator(100000)
        length = Fraction(item.quarterLength).limit_denominator(100000)
        events += [(onset, pitch.midi, length) for pitch in item.pitches]
    return sorted(events)


def same(a: list, b: list) -> bool:
    missing, extra = match_events(a, b)
    return not missing and not extra


def _limited(seconds: float):
    signal.setitimer(signal.ITIMER_REAL, seconds)


def check(path: Path, interleaved: bool, timeout: float) -> dict:
    """One conversion as `notagen convert` makes it (at most `timeout` seconds, or Timeout), with the independent
    checks when it was written (each also limited; a check that runs out of time is noted, not counted)."""
    _limited(timeout)
    try:
        result = convert_score(path, interleaved=interleaved)
    except NotaGenError as error:
        return {"outcome": "refused", "reason": str(error).replace(f"{path}: ", "", 1)}
    finally:
        _limited(0)
    if not result.verification.exact:
        return {"outcome": "refused", "reason": "not written: " + result.verification.summary()}
    problems = []
    written = _xml_text(_read(result.text))
    # Hidden playback voices are dropped on purpose, with a note: judge against the score without them.
    reference = result.source_xml
    if any(change.startswith("hidden voices beside shown notes") for change in result.changes):
        reference = prepare_musicxml(result.source_xml.encode("utf-8"), path.name).data.decode("utf-8")
    _limited(timeout)
    try:
        source = music21_events(reference)
        if not same(source, musicxml_events(reference)):
            # music21 reads the source itself differently (notation-only ties, an empty bar, a trailing
            # <forward>…): its reading cannot judge this conversion.
            problems.append("(music21 reads the source differently: not comparable)")
        elif not same(source, music21_events(written)):
            problems.append("music21 reads the round trip differently from the source")
    except Timeout:
        problems.append(f"(music21 took over {timeout:g} s: not compared)")
    except Exception as error:  # noqa: BLE001 - music21 fails on some odd files; say so, do not count it
        problems.append(f"(music21 could not compare: {type(error).__name__})")
    finally:
        _limited(0)
    if not interleaved:
        back = read_abc_tune(result.text)   # what `notagen convert FILE.abc OUT.musicxml` does
        if back.reader != "abc2xml" or not same(musicxml_events(reference), musicxml_events(back.xml)):
            problems.append(f"the ABC file read back by {back.reader} differs")
    damaged = [p for p in problems if not p.startswith("(")]
    return {"outcome": "silently damaged" if damaged else "faithful", "problems": problems,
            "changes": result.changes}


def _read(abc: str):
    from notagen.vree import run_abc2xml

    return run_abc2xml(prepare_abc_for_abc2xml(abc)).score


def baseline(path: Path) -> str:
    """The pipeline before: xml2abc and abc2xml as abctoolkit ships them, verified the same way (interleaved)."""
    from abctoolkit import abc2xml, xml2abc

    from notagen.abc.interleave import interleave
    from notagen.abc.text import clean_abc

    try:
        source = score_to_musicxml(path)
        data = source.encode("utf-8")
        out, log = io.StringIO(), io.StringIO()
        with redirect_stderr(log):
            writer = xml2abc.ABCoutput("x.abc", "", 0, XML2ABC_OPTIONS)
            writer.outfile = out
            xml2abc.abcOut = writer
            xml2abc.Parser(XML2ABC_OPTIONS).parse(io.BytesIO(data))
            if not out.getvalue().strip():
                return "failed"
            text = interleave(clean_abc(out.getvalue()))
            abc2xml.prevloc = 0
            score = abc2xml.MusicXml().parse(prepare_abc_for_abc2xml(text), False, False, False)
        return "faithful" if same(musicxml_events(source), musicxml_events(_xml_text(score))) else "damaged"
    except Exception:  # noqa: BLE001 - the baseline crashes on many files: that is what it measures
        return "failed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per conversion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        sys.exit(f"no MusicXML files in {args.folder}")
    signal.signal(signal.SIGALRM, _alarm)
    rows = []
    started = time.perf_counter()
    for path in files:
        row = {"file": str(path.relative_to(args.folder))}
        for mode, interleaved in (("standard", False), ("interleaved", True)):
            try:
                row[mode] = check(path, interleaved, args.timeout)
            except Timeout:
                row[mode] = {"outcome": "traceback", "reason": f"conversion over {args.timeout:g} s"}
            except Exception as error:  # noqa: BLE001 - counted as a bug, with the traceback kept
                row[mode] = {"outcome": "traceback", "reason": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc()}
        row["baseline"] = baseline(path)
        rows.append(row)
        why = row["standard"].get("reason") or "; ".join(row["standard"].get("problems", []))
        print(f"{row['file']}: {row['standard']['outcome']} / {row['interleaved']['outcome']} "
              f"(before: {row['baseline']}){': ' + why[:300] if why else ''}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started

    outcomes = ("faithful", "refused", "silently damaged", "traceback")
    counts = {mode: Counter(row[mode]["outcome"] for row in rows) for mode in ("standard", "interleaved")}
    before = Counter(row["baseline"] for row in rows)
    print(f"\n{len(files)} files in {args.folder} ({seconds:.0f} s)\n")
    print("| ABC | " + " | ".join(outcomes) + " |")
    print("|---|" + "---|" * len(outcomes))
    for mode in ("standard", "interleaved"):
        print(f"| {mode} | " + " | ".join(str(counts[mode][o]) for o in outcomes) + " |")
    unjudged = sum(any(p.startswith("(") for p in row[mode].get("problems", [])) for row in rows
                   for mode in ("standard", "interleaved") if row[mode]["outcome"] == "faithful")
    print(f"\n{unjudged} faithful conversions could not be cross-checked by music21 (it reads their source "
          "differently, fails on it or runs out of time)")
    print(f"\nbefore (abctoolkit as shipped, interleaved): {before['faithful']} faithful, {before['damaged']} "
          f"damaged, {before['failed']} failed\n")
    reasons = Counter(row[mode]["reason"].split(":")[0].split(" in part")[0] for row in rows
                      for mode in ("standard",) if row[mode]["outcome"] == "refused")
    print("refusals (standard ABC) by reason:")
    for reason, count in reasons.most_common():
        print(f"  {count:3d}  {reason}")
    for row in rows:
        for mode in ("standard", "interleaved"):
            if row[mode]["outcome"] in ("silently damaged", "traceback"):
                print(f"{row['file']} ({mode}): {row[mode]['outcome']}: "
                      f"{row[mode].get('problems') or row[mode].get('reason')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"folder": str(args.folder), "files": len(files), "seconds": round(seconds, 1),
                                    "counts": {m: dict(c) for m, c in counts.items()}, "before": dict(before),
                                    "rows": rows}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
