"""A corpus of malformed and hostile score files, made on the spot (nothing hostile is stored in the repository).

`make_corpus(folder)` writes the files and returns {file name: expected outcome}: "ok" for the good files (which
every command must read), else the words the one-line refusal must contain. The small `TEST_LIMITS` keep every
refusal fast; the zip bomb is sized against them (64 MiB of XML inside 70 KB, over the 8 MB unpacked limit).
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path

from notagen.limits import Limits

MiB = 2**20
TEST_LIMITS = Limits(max_input_bytes=4 * MiB, max_unpacked_bytes=8 * MiB, max_voices=64, max_notes_per_bar=512,
                     max_note_quarters=256, max_xml_depth=64, max_seconds=60.0, max_memory_mb=2048)
CLI_FLAGS = {"max_input_mb": 4, "max_unpacked_mb": 8, "max_voices": 64, "max_notes_per_bar": 512,
             "max_seconds": 60.0, "max_memory_mb": 2048}

GOOD_ABC = """X:1
T:Good tune
M:4/4
L:1/8
K:G
GABc dedB|dedB dedB|c2ec B2dB|c2A2 A4|]
"""

CONTAINER = ('<?xml version="1.0" encoding="UTF-8"?>\n<container><rootfiles>'
             '<rootfile full-path="score.xml" media-type="application/vnd.recordare.musicxml+xml"/>'
             '</rootfiles></container>\n')

ENTITY_BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE score-partwise [\n<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">\n'
               + "".join(f'<!ENTITY {x} "{("&" + p + ";") * 16}">\n' for p, x in zip("abcdefgh", "bcdefghi"))
               + ']>\n<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>&i;</part-name>'
               '</score-part></part-list><part id="P1"><measure number="1"/></part></score-partwise>\n')


def _abc(body: str, header: str = "") -> str:
    return f"X:1\nT:hostile\nM:4/4\nL:1/8\n{header}K:C\n{body}\n"


def good_tune(number: int) -> str:
    """A valid one-voice tune; each number gives other music (so no good file is another's duplicate)."""
    return GOOD_ABC.replace("K:G", "K:" + "GDAE"[number % 4])


def good_musicxml(number: int = 1) -> bytes:
    from notagen.convert import abc_to_musicxml

    return abc_to_musicxml(good_tune(number)).encode("utf-8")


def make_corpus(folder: Path, bomb_mib: int = 64) -> dict[str, str]:
    """Write the corpus into `folder`; {name: "ok" or words the refusal names}. The zip bomb holds `bomb_mib` MiB
    of XML (1024: the 1 GiB of the reported attack, in 1 MB)."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = good_musicxml(1)
    rng = random.Random(20)
    expected: dict[str, str] = {}

    def put(name: str, data: bytes | str, outcome: str) -> None:
        (folder / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        expected[name] = outcome

    put("good.abc", GOOD_ABC, "ok")
    put("good_utf16.abc", good_tune(2).encode("utf-16"), "ok")
    put("good_utf16.musicxml", good_musicxml(3).decode("utf-8").replace("encoding='utf-8'", "encoding='utf-16'")
        .replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"), "ok")
    put("good.musicxml", xml, "ok")
    # The same MusicXML bytes under a wrong extension, sorting first: it fails, the good copy must still build.
    put("a_copy_of_good.abc", xml, "read")
    bomb = folder / "zipbomb.mxl"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/container.xml", CONTAINER)
        with archive.open("score.xml", "w", force_zip64=True) as member:   # streamed: never whole in memory
            member.write(b"<score-partwise>")
            for _ in range(bomb_mib):
                member.write(b" " * MiB)
            member.write(b"</score-partwise>")
    expected["zipbomb.mxl"] = "unpacked-size limit"
    put("entities.musicxml", ENTITY_BOMB, "declares entities")
    put("deep.musicxml", "<score-partwise>" + "<a>" * 20000 + "</a>" * 20000 + "</score-partwise>", "nested deeper")
    put("voices.abc", _abc("".join(f"[V:{i}] C8|\n" for i in range(2000)),
                           "".join(f"V:{i}\n" for i in range(2000))), "voices")
    put("huge_bar.abc", _abc("C" * 10000 + "|"), "notes-per-bar")
    put("long_note.abc", _abc("C99999999|"), "quarter notes")
    junk = "ABCDEFGabcdefgz,' |[]()^_=~.-:"
    put("junk.abc", _abc("\n".join("".join(rng.choice(junk) for _ in range(80)) for _ in range(1500))), "abc2xml")
    put("binary.abc", bytes(rng.randrange(256) for _ in range(4096)), "binary")
    put("empty.abc", "", "empty")
    put("huge.abc", GOOD_ABC + "%" * (5 * MiB), "--max-input-mb")
    put("score.mid", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00", "MIDI")
    loop = folder / "loop"
    loop.mkdir(exist_ok=True)
    if not (loop / "again").is_symlink():
        os.symlink("..", loop / "again")   # a link back up: a walk that follows links never ends
    return expected


__all__ = ["make_corpus", "good_musicxml", "good_tune", "TEST_LIMITS", "CLI_FLAGS", "GOOD_ABC"]
