"""Small MusicXML scores written by hand for the conversion tests: one notation feature each, a few bars.

`score(part(...), ...)` wraps parts in a partwise document; `part(bars, ...)` wraps bars (lists of element
strings) in measures; `note("C#4", 1, ...)` writes one note. Durations are in divisions (default 4 per quarter).
"""

from __future__ import annotations

import re

_PITCH = re.compile(r"^([A-G])(#{1,2}|b{1,2})?(-?\d)$")


def note(pitch: str | None, duration: int | None, voice: int | str = 1, *, staff: int | None = None,
         chord: bool = False, grace: bool = False, tie: str | None = None, attrs: str = "", inner: str = "",
         tuplet: tuple[int, int] | None = None, notations: str = "", alter: str | None = None) -> str:
    """One <note>: `pitch` like "C#4" (None: a rest), `tie` "start"/"stop"/"stop start", `tuplet` (actual, normal)
    for a time modification, `inner`/`notations` extra XML inside the note / its <notations>."""
    parts = []
    if grace:
        parts.append("<grace/>")
    if chord:
        parts.append("<chord/>")
    if pitch is None:
        parts.append("<rest/>")
    else:
        step, accidental, octave = _PITCH.match(pitch).groups()
        change = alter if alter is not None else {None: None, "#": "1", "##": "2", "b": "-1", "bb": "-2"}[accidental]
        parts.append(f"<pitch><step>{step}</step>{f'<alter>{change}</alter>' if change else ''}"
                     f"<octave>{octave}</octave></pitch>")
    if duration is not None and not grace:
        parts.append(f"<duration>{duration}</duration>")
    ties = (tie or "").split()
    parts += [f'<tie type="{kind}"/>' for kind in ties]
    parts.append(f"<voice>{voice}</voice>")
    if tuplet:
        parts.append(f"<time-modification><actual-notes>{tuplet[0]}</actual-notes>"
                     f"<normal-notes>{tuplet[1]}</normal-notes></time-modification>")
    if staff is not None:
        parts.append(f"<staff>{staff}</staff>")
    parts.append(inner)
    marks = "".join(f'<tied type="{kind}"/>' for kind in ties) + notations
    if marks:
        parts.append(f"<notations>{marks}</notations>")
    return f"<note{(' ' + attrs) if attrs else ''}>{''.join(parts)}</note>"


def attributes(divisions: int | None = 4, fifths: int | None = 0, mode: str | None = None, time: str | None = "4/4",
               clef: str = "G2", staves: int | None = None, extra: str = "") -> str:
    parts = []
    if divisions is not None:
        parts.append(f"<divisions>{divisions}</divisions>")
    if fifths is not None:
        parts.append(f"<key><fifths>{fifths}</fifths>{f'<mode>{mode}</mode>' if mode else ''}</key>")
    if time:
        beats, beat_type = time.split("/")
        parts.append(f"<time><beats>{beats}</beats><beat-type>{beat_type}</beat-type></time>")
    if staves:
        parts.append(f"<staves>{staves}</staves>")
    parts.append(extra)
    if clef:
        parts.append(f"<clef><sign>{clef[0]}</sign><line>{clef[1:]}</line></clef>")
    return f"<attributes>{''.join(parts)}</attributes>"


def backup(duration: int) -> str:
    return f"<backup><duration>{duration}</duration></backup>"


def forward(duration: int) -> str:
    return f"<forward><duration>{duration}</duration></forward>"


def part(bars: list[list[str]], part_id: str = "P1") -> tuple[str, str]:
    measures = "".join(f'<measure number="{i + 1}">{"".join(bar)}</measure>' for i, bar in enumerate(bars))
    return part_id, f'<part id="{part_id}">{measures}</part>'


def score(*parts: tuple[str, str], names: dict[str, str] | None = None, declare: bool = True) -> str:
    """A partwise MusicXML document of these parts (declared in the part list unless `declare` is False)."""
    listed = "".join(f'<score-part id="{pid}"><part-name>{(names or {}).get(pid, pid)}</part-name></score-part>'
                     for pid, _ in parts) if declare else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<score-partwise version="3.1">'
            f"<part-list>{listed}</part-list>{''.join(body for _, body in parts)}</score-partwise>\n")


def melody(notes: str, divisions: int = 4, **kwargs: object) -> list[str]:
    """Quarter notes from a space-separated list of pitches ("C4 D4 E4 F4"), for filling bars."""
    return [note(pitch, divisions, **kwargs) for pitch in notes.split()]


def write(tmp_path, xml: str, name: str = "piece.musicxml"):
    path = tmp_path / name
    path.write_text(xml, encoding="utf-8")
    return path


def assert_faithful(tmp_path, xml: str, name: str = "piece.musicxml"):
    """Convert to standard and interleaved ABC, read both back and compare every note (pitch, onset, duration)
    with the source, through the verification and independently; returns the standard ABC and its conversion."""
    from notagen.convert import abc_to_musicxml, convert_score
    from notagen.events import compare_events, musicxml_events

    path = write(tmp_path, xml, name)
    source = musicxml_events(xml)
    assert source, "a fixture needs notes"
    results = {}
    for interleaved in (False, True):
        conversion = convert_score(path, interleaved=interleaved)
        assert conversion.verification.exact, conversion.verification.summary()
        back = musicxml_events(abc_to_musicxml(conversion.text))
        assert compare_events(source, back, durations=True).exact, (conversion.text, source, back)
        results[interleaved] = conversion
    return results[False].text, results[False]
