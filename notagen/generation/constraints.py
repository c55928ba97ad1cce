"""Bar-aligned decoding: every voice of a bar line lasts exactly as long as the line's first voice.

A small model writes plausible voices whose bars are a beat too long or too short; one such bar makes the whole
piece invalid (its voices drift apart). With `SamplingSettings.align_bars`, the characters that would break the
alignment are removed from the distribution before sampling, inside the voice being written:

* a barline (`|`, `:`) or the end of the unit (the patchilizer's EOS: a unit ends before the barline that
  follows it) is allowed only when the voice has reached the first voice's length (or, for a barline, at the very
  start of the voice: a left barline such as `|:`); a newline is not allowed before the voice's barline;
* any other character is allowed when the voice's length after it still fits; once a note has overshot (`G` in a
  bar with half a unit left), only characters that shorten it (`/`, a smaller length) are allowed; once the voice
  is full, only a barline, a space, a tie, a slur end, an octave mark or a shortening;
* voices come in increasing order on a line and are declared in the header (`[V:3]…|[V:3]`, or `[V:8]` in a
  four-voice piece, is not allowed; single-digit voice ids only).

The first voice of each line is free: it sets the bar's length (pickups, fermata bars and meter changes stay the
model's choice). Inside `"…"`, `!…!` or `[…]` nothing is constrained (the text is incomplete there). Only the
most likely candidates are checked (the sampler's top-k, or `CHECKED` when top-k is off), re-checking until they
are all allowed; if every checked character is disallowed the row is left as it was, so the model's own
choice stands where no allowed continuation is likely.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

import torch
from torch import Tensor

from notagen.abc.text import bar_duration, first_field, parse_unit_length
from notagen.config import EOS_ID

CHECKED = 16
_VOICE_MARK = re.compile(r"\[V:\s*([^\]\s]+)[^\]]*\]")
_LEFT_BARLINE = re.compile(r"^\s*[|:\[\]]*[|:]+[0-9]*")
_OPEN_MARK = re.compile(r"\[V:\s*$")
_BARLINE_START = {ord("|"), ord(":")}
_WHEN_FULL = {ord(c) for c in " -),'"}  # no length of their own: a space, a tie, a slur end, octave marks
# Characters that change a bar's measured length only together with what follows them (accidentals, decorations,
# annotations, slurs, tuplet openers…): allowed without parsing while the voice is short. Note and rest letters,
# lengths, broken rhythm and chord brackets are measured.
_LENGTHLESS = {ord(c) for c in " -),'^_=!\".~(HLMOPSTuvJR{}"}


@lru_cache(maxsize=4096)
def _duration(text: str, unit: Fraction, meter: str | None) -> Fraction | None:
    """bar_duration, memoised: each step re-measures the voice so far (last step's candidate that was chosen) and
    the line's first voice."""
    return bar_duration(text, unit, meter)


def header_timing(text: str) -> tuple[Fraction, str | None, tuple[str, ...]]:
    """(unit length L:, meter M:, declared voice ids) from the header of a piece's text (before its first `[V:` or
    `[r:` line)."""
    header = []
    for line in text.split("\n"):
        if line.startswith(("[V:", "[r:")):
            break
        header.append(line)
    voices = tuple(line[2:].split()[0] for line in header if line.startswith("V:") and line[2:].split())
    return parse_unit_length(first_field(header, "L")), first_field(header, "M"), voices


def _open(text: str) -> bool:
    """True inside an unfinished `"…"`, `!…!`, `{…}` (grace notes) or `[…]` (chord, inline field): no constraint
    applies there."""
    return (text.count('"') % 2 == 1 or text.count("!") % 2 == 1 or text.count("[") > text.count("]")
            or text.count("{") > text.count("}"))


def voice_target(line: str, unit: Fraction, meter: str | None) -> tuple[Fraction, Fraction, str] | None:
    """(target length, current length, current content) of the voice being written on a bar line, or None.

    None when nothing is constrained: the first voice of the line, an unfinished voice mark, open text, or a bar
    whose length cannot be measured.
    """
    marks = list(_VOICE_MARK.finditer(line))
    if len(marks) < 2:
        return None
    content = line[marks[-1].end():]
    body = _LEFT_BARLINE.sub("", content, count=1)
    if _open(content) or "[V:" in content or "|" in body:  # unfinished text, or the voice's barline is written
        return None
    first = line[marks[0].end():marks[1].start()]
    target = _duration(first.rstrip(" |:]"), unit, meter)
    current = _duration(content, unit, meter)
    if target is None or current is None:
        return None
    return target, current, content


def _allowed(char: int, content: str, current: Fraction, target: Fraction, unit: Fraction,
             meter: str | None) -> bool:
    if char in _BARLINE_START:
        return current == target or not content.strip()
    if char == EOS_ID:  # the unit ends here, and the next one starts with this voice's barline
        return current == target
    if char == ord("\n"):  # a voice ends with its barline, before the line does
        return False
    if char >= 128 or char < 32:
        return True
    if current == target and char in _WHEN_FULL:
        return True
    if current < target and char in _LENGTHLESS:
        return True
    after = _duration(content + chr(char), unit, meter)
    if after is None:
        return current != target
    if current >= target:  # full: nothing new; overshot by the last note: only shortening helps
        return after < current
    return after <= target


def _ban_voice_ids(logits: Tensor, line: str, voices: tuple[str, ...]) -> int:
    """Right after `[V:`, only a voice the header declares and that comes after the line's previous voice (single
    digit ids only; otherwise nothing is constrained)."""
    if not _OPEN_MARK.search(line) or not voices or not all(v.isdigit() and len(v) == 1 for v in voices):
        return 0
    previous = [m.group(1) for m in _VOICE_MARK.finditer(line)]
    last = int(previous[-1]) if previous and previous[-1].isdigit() else -1
    allowed = {ord(v) for v in voices if int(v) > last}
    if not allowed or not torch.isfinite(logits[sorted(allowed)]).any():
        return 0
    banned = [ord(str(d)) for d in range(10) if ord(str(d)) not in allowed]
    logits[banned] = float("-inf")
    return len(banned)


def align_bar(logits: Tensor, line: str, unit: Fraction, meter: str | None, top_k: int,
              voices: tuple[str, ...] = ()) -> int:
    """Set to -inf, in place, the logits [V] of likely characters that would misalign the bar; returns how many."""
    info = voice_target(line, unit, meter)
    if info is None:
        return _ban_voice_ids(logits, line, voices)
    target, current, content = info
    wanted = min(top_k if top_k > 0 else CHECKED, logits.numel())  # the sampler never looks past its top-k
    banned: dict[int, float] = {}  # char → its logit before the ban
    checked: set[int] = set()
    while True:
        values, ids = torch.topk(logits, wanted)
        fresh = [int(i) for v, i in zip(values.tolist(), ids.tolist()) if v != float("-inf") and int(i) not in checked]
        if not fresh:
            break
        for char in fresh:
            checked.add(char)
            if not _allowed(char, content, current, target, unit, meter):
                banned[char] = float(logits[char])
                logits[char] = float("-inf")
    if banned and not torch.isfinite(logits).any():  # nothing likely fits: leave the model's own choice
        for char, value in banned.items():
            logits[char] = value
        return 0
    return len(banned)
