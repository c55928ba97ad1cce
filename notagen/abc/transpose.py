"""The 15 training keys and transposition of standard ABC.

The note-level work is abctoolkit's `transpose_an_abc_text`, which the reference uses and which is exact on the
corpus (chorales, Joplin, Essen: every event moves by the interval). We only feed it canonical text (our own
parser's standard form, whose body starts with a bare `V:1` line as abctoolkit requires) and turn its failures into
`ConversionError`s with the reason.
"""

from __future__ import annotations

import re

from notagen.abc.interleave import parse_standard, render_standard
from notagen.abc.text import header_lines, original_key
from notagen.errors import ConversionError

# The reference's `Key2index` order: 12 pitch classes, with enharmonic pairs at 1 (C#/Db), 6 (F#/Gb), 11 (B/Cb).
KEYS: tuple[str, ...] = ("Cb", "C", "C#", "Db", "D", "Eb", "E", "F", "F#", "Gb", "G", "Ab", "A", "Bb", "B")

_LETTER_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SIGNATURE_NAMES = {-7: "Cb", -6: "Gb", -5: "Db", -4: "Ab", -3: "Eb", -2: "Bb", -1: "F", 0: "C",
                    1: "G", 2: "D", 3: "A", 4: "E", 5: "B", 6: "F#", 7: "C#"}
# Fifths between a mode's tonic and its key signature's major tonic.
_MODE_FIFTHS = {"": 0, "maj": 0, "ion": 0, "min": -3, "m": -3, "aeo": -3, "mix": -1, "dor": -2, "phr": -4,
                "lyd": 1, "loc": -5}
_KEY_FIELD = re.compile(r"^\s*([A-Ga-g])([#b]?)\s*([A-Za-z]*)")


def _parse_key_field(key_field: str) -> tuple[str, str, str]:
    match = _KEY_FIELD.match(key_field or "")
    if not match:
        raise ValueError(f"not a key: {key_field!r}")
    letter, accidental, mode = match.group(1).upper(), match.group(2), match.group(3).lower()
    if mode.startswith("min"):
        mode = "min"
    elif mode != "m":
        mode = mode[:3]
    if mode not in _MODE_FIFTHS:
        raise ValueError(f"unknown mode {match.group(3)!r} in key {key_field!r}")
    return letter, accidental, mode


def key_to_pitch_class(key: str) -> int:
    """Pitch class (C = 0) of a key name's tonic: `C#` → 1, `Cb` → 11, `F#min` → 6.

    For the key signature of a modal key (what the finetune key policy centres on) apply
    `mode_to_key_signature` first: `key_to_pitch_class(mode_to_key_signature("Am"))` → 0.
    """
    letter, accidental, _ = _parse_key_field(key)
    return (_LETTER_PITCH[letter] + {"#": 1, "b": -1, "": 0}[accidental]) % 12


def mode_to_key_signature(key_field: str) -> str:
    """The major key with the same signature as a `K:` value, like the reference's `Mode2Key`.

    `Am` → `C`, `Dmix` → `G`, `F#min` → `A`, `none`/empty → `C`. Signatures beyond seven accidentals wrap to the
    enharmonic one (`G#` → `Ab`), as the reference's `EqualNote` fallback does.
    """
    if not key_field or key_field.strip().lower().startswith("none"):
        return "C"
    letter, accidental, mode = _parse_key_field(key_field)
    fifths = _LETTER_FIFTHS[letter] + {"#": 7, "b": -7, "": 0}[accidental] + _MODE_FIFTHS[mode]
    if fifths > 7:
        fifths -= 12
    elif fifths < -7:
        fifths += 12
    return _SIGNATURE_NAMES[fifths]


def keys_for_pitch_class(pitch_class: int) -> tuple[str, ...]:
    """The training keys (one or two enharmonic names) with this pitch class, in `KEYS` order."""
    return tuple(key for key in KEYS if key_to_pitch_class(key) == pitch_class % 12)


def transposition_interval(from_key: str, to_key: str) -> int:
    """Semitones the reference moves a piece in `from_key` (any `K:` value) to `to_key`: the short way,
    0…+6 up, otherwise down (−5…−1)."""
    shift = (key_to_pitch_class(to_key) - key_to_pitch_class(mode_to_key_signature(from_key))) % 12
    return shift - 12 if shift >= 7 else shift


def _teach_abctoolkit_aeolian_and_ionian() -> None:
    """abctoolkit's mode table knows maj, dor, phr, lyd, mix, min, m and loc, but xml2abc writes aeolian keys as
    `K:Baeo` (and abc2xml, as we patch it, reads `aeo` and `ion`): add both, aeolian with minor's tonic and
    ionian with major's, so such pieces transpose instead of failing with KeyError 'Cbaeo'."""
    from abctoolkit import transpose as toolkit

    if "Caeo" in toolkit.Mode2Key:
        return
    for signature, modes in toolkit.Key2Mode.items():
        minor_tonic = modes[5][:-3]
        toolkit.Mode2Key[minor_tonic + "aeo"] = signature
        toolkit.Mode2Key[signature + "ion"] = signature


def transpose(standard_abc: str, key: str) -> str:
    """Transpose cleaned standard ABC to one of the 15 `KEYS` (short way; `perc` voices untouched).

    Returns standard ABC without blank lines. Raises ValueError for a key outside `KEYS` and ConversionError
    when the text cannot be transposed (the reason is in the message).
    """
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r}; expected one of {' '.join(KEYS)}")
    parsed = parse_standard(standard_abc)
    voice_ids = list(parsed.voices)
    if not voice_ids:
        raise ConversionError("cannot transpose: no music found")
    if voice_ids[0] != "1":
        raise ConversionError(f"cannot transpose: the first voice must be V:1 (found V:{voice_ids[0]})")
    # abctoolkit reads each voice's key from the header; a K: line without a value would crash it.
    if any(line.strip() == "K:" for line in header_lines(standard_abc)):
        raise ConversionError("cannot transpose: empty K: field")
    from abctoolkit.transpose import transpose_an_abc_text

    _teach_abctoolkit_aeolian_and_ionian()
    lines = [line + "\n" for line in render_standard(parsed).split("\n") if line.strip()]
    try:
        text = transpose_an_abc_text(lines, key)
    except Exception as error:  # abctoolkit raises bare `Exception('Cannot find proper notename')`, KeyError…
        raise ConversionError(f"cannot transpose to {key}: {type(error).__name__}: {error}") from error
    return "\n".join(line for line in text.split("\n") if line.strip()) + "\n"


__all__ = ["KEYS", "key_to_pitch_class", "keys_for_pitch_class", "mode_to_key_signature", "original_key",
           "transpose", "transposition_interval"]
