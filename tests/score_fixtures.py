"""Tiny scores and collection folders written by the tests themselves.

`musicxml()` writes a partwise MusicXML score of quarter-note bars (one melody, the other parts holding each bar's
first note an octave or two lower), in one or more movements laid out as notation programs write them: measure
numbers that start again at 1, a final barline, a Roman-numeral heading at a new system. `write_lieder()` and
`write_quartets()` lay such scores out as the OpenScore Lieder and String Quartets repositories do (composer / set /
[song /] file, `data/composers.tsv`, READMEs), with a few deliberate oddities: a composer missing from the TSV (dates
from the README), a composer without dates, a song folder with MuseScore files only, a numbering reset inside a
song, a quartet movement whose numbering does not restart, and the same tune in two collections.
"""

from __future__ import annotations

import io
import random
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

STEPS = ("C", "C", "D", "D", "E", "F", "F", "G", "G", "A", "A", "B")
VOICE = ("Voice", "voice.vocals", "G", 2)
PIANO = ("Piano", "keyboard.piano", "G", 2)
SOPRANO, ALTO = ("Soprano", "voice.soprano", "G", 2), ("Alto", "voice.alto", "G", 2)
TENOR, BASS = ("Tenor", "voice.tenor", "G", 2), ("Bass", "voice.bass", "F", 4)
STRINGS = (("Violin I", "strings.violin", "G", 2), ("Violin II", "strings.violin", "G", 2),
           ("Viola", "strings.viola", "C", 3), ("Violoncello", "strings.cello", "F", 4))


def tune(seed: int, length: int = 24) -> list[int]:
    """A made-up melody of `length` quarter notes (a random walk by steps and small leaps, never repeating a note);
    tunes of two seeds are unrelated (the tests check that only tunes of one seed are found as near-duplicates)."""
    rng = random.Random(seed)
    pitches = [rng.randint(62, 72)]
    while len(pitches) < length:
        step = rng.choice((-4, -3, -2, -1, 1, 2, 3, 4))
        if 55 <= pitches[-1] + step <= 81:
            pitches.append(pitches[-1] + step)
    return pitches


def transpose(tune: list[int], semitones: int) -> list[int]:
    return [pitch + semitones for pitch in tune]


@dataclass
class Movement:
    tune: list[int]
    fifths: int = 0
    heading: str = ""
    final_barline: bool = True
    restart_numbers: bool = True
    new_system: bool = True


@dataclass
class Score:
    parts: tuple[tuple[str, str, str, int], ...]
    movements: list[Movement] = field(default_factory=list)


def _pitch(midi: int) -> str:
    step = STEPS[midi % 12]
    alter = "<alter>1</alter>" if midi % 12 in (1, 3, 6, 8, 10) else ""
    return f"<pitch><step>{step}</step>{alter}<octave>{midi // 12 - 1}</octave></pitch>"


def _note(midi: int, duration: int, kind: str) -> str:
    return f"<note>{_pitch(midi)}<duration>{duration}</duration><voice>1</voice><type>{kind}</type></note>"


def musicxml(score: Score) -> str:
    """The MusicXML text of `score`: 4/4 bars of quarter notes, divisions 1."""
    part_list = "".join(
        f'<score-part id="P{i + 1}"><part-name>{name}</part-name><score-instrument id="P{i + 1}-I1">'
        f"<instrument-name>{name}</instrument-name><instrument-sound>{sound}</instrument-sound>"
        f"</score-instrument></score-part>" for i, (name, sound, _sign, _line) in enumerate(score.parts))
    parts = []
    for index, (_name, _sound, sign, line) in enumerate(score.parts):
        measures = []
        number = 0
        for m_index, movement in enumerate(score.movements):
            bars = [movement.tune[i:i + 4] for i in range(0, len(movement.tune), 4)]
            for b_index, bar in enumerate(bars):
                number = 1 if (b_index == 0 and (m_index == 0 or movement.restart_numbers)) else number + 1
                head = ""
                if b_index == 0:
                    if m_index > 0 and movement.new_system:
                        head += '<print new-system="yes"/>'
                    clef = f"<clef><sign>{sign}</sign><line>{line}</line></clef>" if m_index == 0 else ""
                    divisions = "<divisions>1</divisions>" if m_index == 0 else ""
                    time = "<time><beats>4</beats><beat-type>4</beat-type></time>" if m_index == 0 else ""
                    key = f"<key><fifths>{movement.fifths}</fifths></key>"
                    head += f"<attributes>{divisions}{key}{time}{clef}</attributes>"
                    if movement.heading and index == 0:
                        head += (f'<direction placement="above"><direction-type><words>{movement.heading}</words>'
                                 "</direction-type></direction>")
                if index == 0:
                    notes = "".join(_note(p, 1, "quarter") for p in bar)
                else:
                    notes = _note(bar[0] - 12 * index, 4, "whole")
                barline = ('<barline location="right"><bar-style>light-heavy</bar-style></barline>'
                           if b_index == len(bars) - 1 and movement.final_barline else "")
                measures.append(f'<measure number="{number}">{head}{notes}{barline}</measure>')
        parts.append(f'<part id="P{index + 1}">{"".join(measures)}</part>')
    return ("<?xml version='1.0' encoding='utf-8'?>\n"
            '<score-partwise version="3.1"><work><work-title>t</work-title></work>'
            f"<part-list>{part_list}</part-list>{''.join(parts)}</score-partwise>\n")


def write_mxl(path: Path, score: Score) -> Path:
    """`score` as a compressed .mxl file (META-INF/container.xml + the score), as MuseScore exports it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = path.with_suffix(".xml").name
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/container.xml",
                         '<?xml version="1.0" encoding="UTF-8"?><container><rootfiles>'
                         f'<rootfile full-path="{inner}"/></rootfiles></container>')
        archive.writestr(inner, musicxml(score))
    path.write_bytes(buffer.getvalue())
    return path


def _composers_tsv(rows: list[tuple[str, int, int]]) -> str:
    lines = ["id\tpath\tname\tgender\tborn\tdied\tdesc"]
    lines += [f"{i}\t{path}\t{path.replace('_', ' ')}\t\t{born}\t{died}\t" for i, (path, born, died) in enumerate(rows)]
    return "\n".join(lines) + "\n"


def _repository_files(root: Path, marker: str, composers: list[tuple[str, int, int]]) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "scores").mkdir(exist_ok=True)
    (root / "README.md").write_text(f"Mirror of https://musescore.com/{marker}\n", encoding="utf-8")
    (root / "LICENSE.txt").write_text("Creative Commons Legal Code\n\nCC0 1.0 Universal\n", encoding="utf-8")
    (root / "data" / "composers.tsv").write_text(_composers_tsv(composers), encoding="utf-8")


def write_lieder(root: Path) -> Path:
    """An OpenScore Lieder-style repository; returns its folder."""
    _repository_files(root, "openscore-lieder-corpus", [
        ("Schubert,_Franz", 1797, 1828), ("Lang,_Josephine", 1815, 1880), ("Reichardt,_Louise", 1779, 1826)])
    scores = root / "scores"
    song = (VOICE, PIANO)
    write_mxl(scores / "Schubert,_Franz" / "Winterreise,_D.911" / "01_Gute_Nacht" / "lc1.mxl",
              Score(song, [Movement(tune(1))]))
    write_mxl(scores / "Schubert,_Franz" / "Winterreise,_D.911" / "05_Der_Lindenbaum" / "lc2.mxl",
              Score(song, [Movement(tune(2), fifths=1)]))
    write_mxl(scores / "Schubert,_Franz" / "_" / "Standalone_Song" / "lc3.mxl", Score(song, [Movement(tune(3))]))
    # The Gute Nacht tune harmonised for four voices, in another key: a near-duplicate in another work.
    write_mxl(scores / "Reichardt,_Louise" / "_" / "Hymn" / "lc4.mxl",
              Score((SOPRANO, ALTO, TENOR, BASS), [Movement(transpose(tune(1), 5), fifths=-1)]))
    # Two songs in one file: numbering restarts after a final barline.
    arne = scores / "Arne,_Thomas"
    write_mxl(arne / "_" / "Two_Airs" / "lc5.mxl",
              Score(song, [Movement(tune(4)), Movement(tune(5), fifths=2)]))
    (arne / "README.md").write_text("# Thomas Arne\n\n__English composer (1710–1778)__\n", encoding="utf-8")
    # A numbering reset inside one song (a new section, no final barline before it): one piece.
    write_mxl(scores / "Lang,_Josephine" / "_" / "A_Song_In_Two_Sections" / "lc6.mxl",
              Score(song, [Movement(tune(6), final_barline=False), Movement(tune(7), new_system=False)]))
    write_mxl(scores / "Mystery,_Anne" / "_" / "Unknown" / "lc7.mxl", Score(song, [Movement(tune(8))]))
    only_musescore = scores / "Lang,_Josephine" / "_" / "Only_MuseScore"
    only_musescore.mkdir(parents=True)
    (only_musescore / "lc8.mscz").write_bytes(b"PK\x03\x04 not a real MuseScore file")
    return root


def write_quartets(root: Path) -> Path:
    """An OpenScore String Quartets-style repository; returns its folder."""
    _repository_files(root, "openscore-string-quartets", [("Haydn,_Joseph", 1732, 1809), ("Mayer,_Emilie", 1812, 1883)])
    scores = root / "scores"
    # Three movements in one file; the third one's numbering does not restart, but its heading says "III.".
    # Its second movement has the tune of Schubert's standalone song: the same tune in two collections.
    write_mxl(scores / "Haydn,_Joseph" / "String_Quartet_Op.1_No.1" / "sq10.mxl",
              Score(STRINGS, [Movement(tune(9), heading="I."), Movement(tune(3), fifths=3, heading="II. Menuetto"),
                              Movement(tune(10), heading="III.", restart_numbers=False)]))
    # A work stored one movement per file in one set folder.
    mayer = scores / "Mayer,_Emilie" / "String_Quartet_Op.14"
    write_mxl(mayer / "sq20.mxl", Score(STRINGS, [Movement(tune(11))]))
    write_mxl(mayer / "sq21.mxl", Score(STRINGS, [Movement(tune(12))]))
    return root


def git_commit(root: Path) -> str | None:
    """Make `root` a git repository with one commit (as a clone is); its commit, or None without git."""
    try:
        for command in (["init", "-q"], ["add", "-A"],
                        ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "scores"]):
            subprocess.run(["git", "-C", str(root), *command], check=True, capture_output=True, timeout=60)
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
