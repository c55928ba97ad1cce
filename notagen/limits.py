"""Limits on user input: every conversion of a user's file runs bounded in size, shape, time and memory.

`Limits` holds the bounds (defaults below; `notagen convert`, `check`, `data build` and `serve` take flags for the
main ones). Two layers enforce them:

* cheap checks before any parsing, in the process that converts: the input's size, the sizes an `.mxl` archive's
  directory announces (read before anything is inflated, so a zip bomb is refused at once), and a streaming scan of
  MusicXML (nesting depth, entity declarations, voices, notes per bar, the longest note) or ABC (voices, notes per
  bar, the longest note) that stops at the first bound crossed (`scan_musicxml`, `scan_abc`);
* `run_limited(function, *args, limits=…)`: the conversion in a child process with an address-space limit
  (RLIMIT_AS) and a wall-clock deadline after which the child is killed, so no input can hold the caller (the
  studio's server process never parses a user's file itself). A cancel event stops it early.

Hitting a bound raises `LimitError` (an `InputError`) whose one-line message names the limit and its flag.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, TypeVar

from notagen.errors import ConversionError, InputError, NotaGenError

T = TypeVar("T")
MiB = 2**20


class LimitError(InputError):
    """An input crosses one of the `Limits`; the message names the limit and the flag that raises it."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one input file and on the work of converting it. None = no bound."""

    max_input_bytes: int | None = 20 * MiB
    """Size of the file as given (flag --max-input-mb)."""
    max_unpacked_bytes: int | None = 100 * MiB
    """Total size of an `.mxl` archive's members, read from its directory before inflating (--max-unpacked-mb)."""
    max_voices: int | None = 128
    """ABC voices (`V:` ids) or MusicXML (part, voice) pairs (--max-voices)."""
    max_notes_per_bar: int | None = 1024
    """Notes and rests in one bar of one part or voice (--max-notes-per-bar)."""
    max_note_quarters: int | None = 256
    """The longest single note or rest, in quarter notes (64 whole notes)."""
    max_xml_depth: int | None = 64
    """Nesting depth of MusicXML elements (a score needs about 8)."""
    max_seconds: float | None = 300.0
    """Wall time of one conversion (--max-seconds); the worker process is killed after it."""
    max_memory_mb: int | None = 4096
    """Address space of the worker process (--max-memory-mb)."""

    def scaled(self, **changes: Any) -> Limits:
        return replace(self, **changes)


DEFAULT_LIMITS = Limits()
_current = DEFAULT_LIMITS


def current_limits() -> Limits:
    """The limits in force in this process (the defaults, or what `run_limited` set in a worker)."""
    return _current


@contextlib.contextmanager
def use_limits(limits: Limits) -> Iterator[Limits]:
    """Make `limits` the ones `current_limits` returns, for the duration of the block."""
    global _current
    previous, _current = _current, limits
    try:
        yield limits
    finally:
        _current = previous


def cli_limits(max_input_mb: float | None = None, max_unpacked_mb: float | None = None,
               max_voices: int | None = None, max_notes_per_bar: int | None = None,
               max_seconds: float | None = None, max_memory_mb: int | None = None) -> Limits:
    """Limits from command-line flags: each flag given replaces its default (0 = no bound)."""
    changes: dict[str, Any] = {}
    for name, value, scale in (("max_input_bytes", max_input_mb, MiB), ("max_unpacked_bytes", max_unpacked_mb, MiB),
                               ("max_voices", max_voices, 1), ("max_notes_per_bar", max_notes_per_bar, 1),
                               ("max_seconds", max_seconds, 1), ("max_memory_mb", max_memory_mb, 1)):
        if value is None:
            continue
        if value < 0:
            raise InputError(f"--{name.replace('_bytes', '_mb').replace('_', '-')} must be 0 (no bound) or more, "
                             f"got {value:g}")
        changes[name] = None if value == 0 else (int(value * scale) if scale != 1 else value)
    return replace(DEFAULT_LIMITS, **changes)


def _mb(value: int) -> str:
    return f"{value / MiB:.3g} MB" if value >= MiB // 10 else f"{value:,} bytes"


# ------------------------------------------------------------------------------------------------- cheap checks


def check_input_size(size: int, name: str, limits: Limits | None = None) -> None:
    limit = (limits or _current).max_input_bytes
    if limit is not None and size > limit:
        raise LimitError(f"{name}: too large ({_mb(size)} > the {_mb(limit)} input limit, --max-input-mb)")


def check_archive(archive: zipfile.ZipFile, name: str, limits: Limits | None = None) -> None:
    """Refuse an archive whose directory announces more unpacked bytes than the limit (nothing is inflated).

    Reads stop at the announced size (zipfile checks it while inflating), so a member cannot lie its way past this.
    """
    limit = (limits or _current).max_unpacked_bytes
    if limit is None:
        return
    total = sum(info.file_size for info in archive.infolist())
    if total > limit:
        raise LimitError(f"{name}: .mxl unpacks to {_mb(total)}, over the {_mb(limit)} unpacked-size limit "
                         "(--max-unpacked-mb)")


class _Stop(Exception):
    pass


def scan_musicxml(data: bytes, name: str, limits: Limits | None = None) -> None:
    """Stream through MusicXML bytes and raise LimitError at the first bound crossed: entity declarations (never
    needed by MusicXML; the vector of "billion laughs" bombs), nesting depth, voices, notes per bar, note length.

    Malformed XML is left for the real parser to report; only the bounds are judged here.
    """
    import xml.parsers.expat

    limits = limits or _current
    parser = xml.parsers.expat.ParserCreate()
    state = {"depth": 0, "part": "", "bar": "", "notes": 0, "divisions": Fraction(1), "text": "", "note": False,
             "grace": False}
    voices: set[tuple[str, str]] = set()
    problem: list[str] = []

    def stop(message: str) -> None:
        problem.append(message)
        raise _Stop

    def entity(*_: Any) -> None:
        stop(f"{name}: the XML declares entities (refused: MusicXML needs none, and they can expand without bound)")

    def start(tag: str, attributes: dict[str, str]) -> None:
        state["depth"] += 1
        if limits.max_xml_depth is not None and state["depth"] > limits.max_xml_depth:
            stop(f"{name}: XML nested deeper than the limit of {limits.max_xml_depth} levels")
        state["text"] = ""
        if tag == "part":
            state["part"] = attributes.get("id", "")
            voices.add((state["part"], "1"))
            state["divisions"] = Fraction(1)
        elif tag == "measure":
            state["bar"], state["notes"] = attributes.get("number", "?"), 0
        elif tag == "note":
            state["note"], state["grace"] = True, False
            state["notes"] += 1
            if limits.max_notes_per_bar is not None and state["notes"] > limits.max_notes_per_bar:
                stop(f"{name}: over {limits.max_notes_per_bar} notes in bar {state['bar']} of part {state['part']} "
                     "(--max-notes-per-bar)")
        elif tag == "grace":
            state["grace"] = True

    def end(tag: str) -> None:
        state["depth"] -= 1
        text = state["text"].strip()
        if tag == "divisions":
            with contextlib.suppress(ValueError, ZeroDivisionError):
                value = Fraction(text)
                if value > 0:
                    state["divisions"] = value
        elif tag == "voice" and state["note"]:
            voices.add((state["part"], text))
            if limits.max_voices is not None and len(voices) > limits.max_voices:
                stop(f"{name}: more than {limits.max_voices} voices (--max-voices)")
        elif tag == "duration" and state["note"] and limits.max_note_quarters is not None:
            with contextlib.suppress(ValueError, ZeroDivisionError):
                quarters = Fraction(text) / state["divisions"]
                if quarters > limits.max_note_quarters:
                    stop(f"{name}: a duration of {float(quarters):g} quarter notes in bar {state['bar']} of part "
                         f"{state['part']}, over the limit of {limits.max_note_quarters}")
        elif tag == "note":
            state["note"] = False
        elif tag == "part" and limits.max_voices is not None and len({p for p, _ in voices}) > limits.max_voices:
            stop(f"{name}: more than {limits.max_voices} parts (--max-voices)")

    def characters(text: str) -> None:
        if len(state["text"]) < 64:
            state["text"] += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.EntityDeclHandler = entity
    try:
        parser.Parse(data, True)
    except _Stop:
        raise LimitError(problem[0]) from None
    except xml.parsers.expat.ExpatError:
        if problem:
            raise LimitError(problem[0]) from None
        return  # not well-formed: the converter's own parser says where


_ABC_VOICE = re.compile(r"^V:\s*(\S+)|\[V:\s*([^\]\s]+)", re.MULTILINE)
_ABC_NOTE = re.compile(r"[_=^]*([A-Ga-gzxZX])[,']*(\d*)((?:/\d*)*)")
_ABC_NOISE = re.compile(r'"[^"\n]*"|![^!\n]*!|\+[^+\n]*\+|\[[A-Za-z]:[^\]\n]*\]')
_ABC_UNIT = re.compile(r"^L:\s*(\d+)\s*/\s*(\d+)", re.MULTILINE)


def scan_abc(text: str, name: str, limits: Limits | None = None) -> None:
    """Raise LimitError when ABC text has more voices than the limit, a bar of a voice with more notes than the
    limit, or a note longer than the limit (`C99999999`). A linear pass over the text; it judges only the bounds."""
    limits = limits or _current
    if limits.max_voices is not None:
        voices = {match.group(1) or match.group(2) for match in _ABC_VOICE.finditer(text)}
        if len(voices) > limits.max_voices:
            raise LimitError(f"{name}: {len(voices)} voices, over the limit of {limits.max_voices} (--max-voices)")
    unit_match = _ABC_UNIT.search(text)
    unit = Fraction(int(unit_match.group(1)), int(unit_match.group(2) or 1)) \
        if unit_match and int(unit_match.group(2) or 0) else Fraction(1, 8)
    longest = None if limits.max_note_quarters is None else Fraction(limits.max_note_quarters, 4) / unit
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "%" or (len(line) > 1 and line[1] == ":" and line[0].isalpha()):
            continue   # comments and header/field lines hold no notes
        music = _ABC_NOISE.sub("", line.split("%", 1)[0])
        for bar in re.split(r"[|\]]", music):
            notes = _ABC_NOTE.findall(bar)
            if limits.max_notes_per_bar is not None and len(notes) > limits.max_notes_per_bar:
                raise LimitError(f"{name}: line {number}: a bar of {len(notes)} notes, over the limit of "
                                 f"{limits.max_notes_per_bar} (--max-notes-per-bar)")
            if longest is None:
                continue
            for _letter, multiplier, _slashes in notes:
                if multiplier and len(multiplier) < 12 and int(multiplier) <= longest:
                    continue
                if multiplier:
                    raise LimitError(f"{name}: line {number}: a note of length {multiplier[:12]}, over the limit of "
                                     f"{limits.max_note_quarters} quarter notes")


# ------------------------------------------------------------------------------------------- the worker process


def _set_memory_limit(megabytes: int | None) -> None:
    if megabytes is None:
        return
    try:
        import resource

        limit = megabytes * MiB
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (ImportError, ValueError, OSError):
        pass   # no RLIMIT_AS here (macOS refuses it): the wall-clock limit still holds


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _release_forkserver() -> None:
    """Close this worker's copy of the fork server's liveness pipe. Every process the fork server starts holds it
    (so that it can start processes in turn), which keeps the server alive as long as any worker lives: with it
    closed, the server exits when the process that asked for the workers dies, and PDEATHSIG takes them down."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        fd = server._forkserver_alive_fd
    except AttributeError:
        return
    if fd is not None and multiprocessing.parent_process() is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def limit_this_process(limits: Limits) -> None:
    """What a worker process does first: the memory bound, the limits in force, death with its parent."""
    global _current
    _current = limits
    die_with_parent()
    _release_forkserver()
    _set_memory_limit(limits.max_memory_mb)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle


def _child(connection: Any, function: Callable[..., Any], args: tuple, kwargs: dict, limits: Limits) -> None:
    limit_this_process(limits)
    try:
        outcome: tuple = ("ok", function(*args, **kwargs))
    except NotaGenError as error:
        outcome = ("error", error)
    except MemoryError:
        outcome = ("memory", None)
    except RecursionError:
        outcome = ("error", LimitError("the input is nested too deeply to read (recursion limit)"))
    except BaseException as error:  # noqa: BLE001 - sent to the parent, which re-raises it there
        outcome = ("crash", f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    try:
        connection.send(outcome)
    except (MemoryError, pickle.PicklingError, OSError, TypeError) as error:
        with contextlib.suppress(OSError):
            connection.send(("crash", f"cannot send the result back: {type(error).__name__}: {error}"))
    finally:
        connection.close()


_context_lock = threading.Lock()
_context: Any = None
PRELOAD = ["notagen.convert", "notagen.abc.check", "notagen.generation.continuation"]


def _worker_context() -> Any:
    """Forkserver where there is one (a clean single-threaded server with the converters imported forks each
    worker in milliseconds, and nothing of the caller's threads or state is inherited), spawn elsewhere."""
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _context = multiprocessing.get_context("forkserver")
                _context.set_forkserver_preload(PRELOAD)
            else:
                _context = multiprocessing.get_context("spawn")
        return _context


def run_limited(function: Callable[..., T], *args: Any, limits: Limits | None = None, name: str = "input",
                cancel: threading.Event | None = None, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` in a worker process bounded by `limits` (memory, wall time); its result.

    `function` and its arguments must pickle (a module-level function). A NotaGenError raised in the worker is
    raised here; a worker past `max_seconds`, or one that runs out of memory or dies, raises LimitError or
    ConversionError naming `name` and the limit. Setting `cancel` kills the worker within a tenth of a second and
    raises `Cancelled`.
    """
    limits = limits or _current
    context = _worker_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args, kwargs, limits), daemon=True)
    process.start()
    sender.close()
    deadline = None if limits.max_seconds is None else time.monotonic() + limits.max_seconds
    try:
        while True:
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            if receiver.poll(wait):
                try:
                    kind, value = receiver.recv()
                except EOFError:
                    kind, value = "died", None
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled(name)
            if deadline is not None and time.monotonic() >= deadline:
                raise LimitError(f"{name}: conversion stopped after the {limits.max_seconds:g} s time limit "
                                 "(--max-seconds)")
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5)
    if kind == "ok":
        return value
    if kind == "error":
        raise value
    if kind == "memory" or (kind == "died" and process.exitcode == -signal.SIGKILL):
        raise LimitError(f"{name}: conversion stopped at the {limits.max_memory_mb} MB memory limit "
                         "(--max-memory-mb)")
    if kind == "died":
        raise ConversionError(f"{name}: the converter process died (exit code {process.exitcode})")
    raise RuntimeError(f"worker failed on {name}: {value}")


class Cancelled(Exception):
    """`run_limited` was cancelled through its event (not a user error: the caller asked for it)."""


__all__ = ["Limits", "LimitError", "DEFAULT_LIMITS", "Cancelled", "current_limits", "use_limits", "cli_limits",
           "check_input_size", "check_archive", "scan_musicxml", "scan_abc", "run_limited", "limit_this_process",
           "die_with_parent"]
