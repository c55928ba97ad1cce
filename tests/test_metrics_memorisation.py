"""Memorisation index: finds a planted, transposed 8-bar copy of a real training tune and stays quiet on real
held-out tunes; the bar signatures are transposition-invariant."""

from __future__ import annotations

import re

import pytest

from notagen.encoder.corpus import music21_tunes
from notagen.metrics.memorisation import (
    MemorisationIndex,
    flagged_share,
    key_signature,
    parse_bars,
    parse_length,
)

# One diatonic step up with the same mode: a chromatic transposition by a whole tone for notes spelled by the key.
_NEXT_KEY = {"G": "A", "D": "E", "C": "D", "F": "G", "A": "B", "Bb": "C", "Eb": "F", "E": "F#", "Am": "Bm",
             "Em": "F#m", "Dm": "Em", "Gm": "Am", "Bm": "C#m", "Ador": "Bdor", "Edor": "F#dor", "Ddor": "Edor",
             "Gdor": "Ador", "Amix": "Bmix", "Dmix": "Emix", "Gmix": "Amix"}
_BODY_TOKEN = re.compile(r'"[^"]*"|![^!]*!|\[[A-Za-z]:[^\]]*\]|([A-Ga-g])([\',]*)')


def _shift_note(match: re.Match) -> str:
    letter, octave = match.group(1), match.group(2)
    if letter is None:
        return match.group(0)
    if letter == "B":  # B4 → C5, B,3 → C4
        return "C" + octave[1:] if octave.startswith(",") else "c" + octave
    if letter == "b":
        return "c'" + octave
    return {"G": "A", "g": "a"}.get(letter, chr(ord(letter) + 1)) + octave


def transpose_up_a_tone(text: str) -> str | None:
    """Transpose a tune without explicit accidentals up a whole tone (None if it cannot be done this simply)."""
    key = re.search(r"^K:\s*(\S+)", text, flags=re.M)
    if not key or key.group(1) not in _NEXT_KEY or re.search(r"[\^_=]", _body(text)):
        return None
    lines = []
    for line in text.splitlines():
        if re.match(r"^[A-Za-z]:", line):
            lines.append(f"K:{_NEXT_KEY[key.group(1)]}" if line.startswith("K:") else line)
        else:
            lines.append(_BODY_TOKEN.sub(_shift_note, line))
    return "\n".join(lines) + "\n"


def _body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not re.match(r"^[A-Za-z]:", line))


def _header(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^[A-Za-z]:", line)]


def _meter_and_unit(text: str) -> tuple[str, str]:
    fields = {line[0]: line[2:].replace(" ", "") for line in _header(text)}
    return fields.get("M", ""), fields.get("L", "")


def _bars(text: str) -> list[str]:
    body = " ".join(line.rstrip("\\") for line in _body(text).splitlines())
    return [bar.strip() + " |" for bar in re.split(r":*\|[\]|:]?:*", body) if bar.strip()]


def test_key_signatures_lengths_and_bar_accidentals():
    assert key_signature("D") == {"C": 1, "D": 0, "E": 0, "F": 1, "G": 0, "A": 0, "B": 0}
    assert key_signature("Ador") == key_signature("G") == key_signature("Em")
    assert key_signature("Bbmin")["G"] == -1 and key_signature("F#m")["G"] == 1
    assert [parse_length(x) for x in ["", "3", "/", "//", "3/2", "/4"]] == [1, 3, 0.5, 0.25, 1.5, 0.25]
    bars = parse_bars("L:1/8\nM:4/4\nK:D\n_c2 c2 =f2 f2 | c8 |\n").voices["1"]
    assert [e[1] for e in bars[0]] == [71, 71, 77, 77]  # _c carries through the bar; =f overrides the key
    assert [e[1] for e in bars[1]] == [73]  # a new bar restores the key (C#)


def test_signatures_are_transposition_invariant():
    tune = "L:1/8\nM:6/8\nK:G\nGAB c2d | e2d BAG | [DB]2 A G3 |]\n"
    moved = transpose_up_a_tone(tune)
    assert moved == "L:1/8\nM:6/8\nK:A\nABc d2e | f2e cBA | [Ec]2 B A3 |]\n"
    assert parse_bars(tune).whole_bars() == parse_bars(moved).whole_bars()
    other = parse_bars(tune.replace("c2d", "c2e")).whole_bars()
    assert other[0] != parse_bars(tune).whole_bars()[0] and other[1:] == parse_bars(tune).whole_bars()[1:]


@pytest.fixture(scope="module")
def oneill():
    tunes = music21_tunes("oneills1850")
    train = [t for t in tunes if t.id < "0500"]
    held = [t for t in tunes if t.id.startswith(("0759", "0811"))]
    return train, held, MemorisationIndex.build((t.id, t.text) for t in train)


def test_finds_a_planted_transposed_copy(oneill):
    train, held, index = oneill
    host = next(t for t in held if _meter_and_unit(t.text) == ("6/8", "1/8") and len(_bars(t.text)) >= 8)
    source = next(t for t in train[100:] if _meter_and_unit(t.text) == ("6/8", "1/8")
                  and transpose_up_a_tone(t.text) and len(_bars(t.text)) >= 14)
    moved = transpose_up_a_tone(source.text)
    copied = _bars(moved)[2:10]
    host_key = re.search(r"^K:\s*(\S+)", host.text, flags=re.M).group(1)
    new_key = re.search(r"^K:\s*(\S+)", moved, flags=re.M).group(1)
    host_bars = _bars(host.text)
    lines = _header(host.text) + host_bars[:4] + [f"[K:{new_key}]" + copied[0], *copied[1:]]
    lines += [f"[K:{host_key}]" + host_bars[4]] + host_bars[5:]
    spliced = "%Romantic\n%end\n" + "\n".join(lines) + "\n"

    result = index.check(spliced)
    assert result.flagged
    assert result.longest.piece == source.id
    assert 8 <= result.longest.bars <= 9  # the copy, perhaps one more bar that happens to match
    assert result.longest.generated_start in (3, 4)
    assert index.check(host.text).longest.piece != source.id


def test_real_held_out_tunes_are_not_flagged(oneill):
    _, held, index = oneill
    results = [index.check(t.text) for t in held]
    assert len(results) > 100
    # Measured on this split: no held-out tune shares 4 consecutive bars with one training tune.
    assert flagged_share(results) == 0.0
    assert max(r.longest.bars for r in results) < 4
    assert sum(r.seconds for r in results) / len(results) < 0.05


def test_voice_level_copy_in_interleaved_piece():
    train = ("L:1/8\nM:4/4\nK:C\nV:1\nV:2\n[V:1]cdef gabc'|[V:2]C,8|\n[V:1]c'bag fedc|[V:2]G,8|\n"
             "[V:1]edcB cdec|[V:2]C,4 G,4|\n[V:1]GABc dBGF|[V:2]F,8|\n[V:1]E2G2 c4|[V:2]C,8|\n")
    index = MemorisationIndex.build([("train", train)])
    # The melody moved to another key and another voice, with a new bass: a voice copy, not a whole-bar copy.
    generated = ("L:1/8\nM:4/4\nK:D\nV:1\nV:2\n" + "".join(
        f"[V:1]{b}|[V:2]{m}|\n" for b, m in [("D,8", "defg abc'd'"), ("A,8", "d'c'ba gfed"),
                                             ("D,2 A,2 D,4", "fedc defd"), ("G,8", "ABcd ecAG")]))
    result = index.check(generated)
    assert result.whole.bars == 0 and result.voice.bars == 4
    assert (result.voice.voice, result.voice.train_voice, result.voice.piece) == ("2", "1", "train")
    assert result.flagged


@pytest.fixture(scope="module")
def chorales():
    """4-voice Bach chorales through the real pipeline (MusicXML → ABC → interleaved), 30 indexed, 21 held out."""
    import warnings

    from music21 import corpus

    from notagen.abc.text import clean_abc, original_key, voice_names
    from notagen.convert import musicxml_to_abc, read_mxl

    paths = sorted(p for p in corpus.getComposer("bach") if str(p).endswith(".mxl") and "-" not in p.name)[:60]
    pieces = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            standard = clean_abc(musicxml_to_abc(read_mxl(path)))
            if len(voice_names(standard)) == 4:
                pieces.append((path.name, standard, original_key(standard)))
    train, held = pieces[:30], pieces[30:]
    from notagen.abc.interleave import interleave

    index = MemorisationIndex.build((name, interleave(text)) for name, text, _ in train)
    return train, held, index


def _split_body(interleaved: str) -> tuple[list[str], list[str]]:
    lines = interleaved.strip().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("[V:"))
    return lines[:start], lines[start:]


def test_planted_copy_in_a_chorale_transposed_with_the_pipeline(chorales):
    from notagen.abc.interleave import interleave
    from notagen.abc.transpose import KEYS, transpose

    train, held, index = chorales
    source = next(p for p in train if p[2] in KEYS)
    host = next(p for p in held if p[2] in KEYS and p[2] != source[2])
    _, copied = _split_body(interleave(transpose(source[1], host[2])))  # into the host's key
    header, body = _split_body(interleave(host[1]))
    spliced = "\n".join(["%Baroque", "%end", *header, *body[:4], *copied[2:10], *body[4:]]) + "\n"
    result = index.check(spliced)
    assert result.flagged and result.flagged_whole and result.whole.piece == source[0]
    assert result.whole.bars == 8 and (result.whole.generated_start, result.whole.train_start) == (4, 2)
    assert not index.check(interleave(host[1])).flagged


def test_held_out_chorales_flag_only_shared_chorale_melodies(chorales):
    """Measured on this split: 3 of 21 held-out chorales share 4–6 consecutive soprano bars with an indexed
    chorale, and each pair harmonises the same hymn tune (Was mein Gott will; Es ist das Heil;
    Herr Jesu Christ, du höchstes Gut). No held-out chorale copies whole bars."""
    from notagen.abc.interleave import interleave

    _, held, index = chorales
    results = {name: index.check(interleave(text)) for name, text, _ in held}
    flagged = {name: r.voice.piece for name, r in results.items() if r.flagged}
    assert flagged == {"bwv144.6.mxl": "bwv111.6.mxl", "bwv155.5.mxl": "bwv117.4.mxl",
                       "bwv168.6.mxl": "bwv113.8.mxl"}
    assert all(results[name].voice.voice == results[name].voice.train_voice == "1" for name in flagged)  # soprano
    assert max(r.whole.bars for r in results.values()) < 4
    assert not any(r.flagged_whole for r in results.values())
    assert flagged_share(list(results.values())) == 3 / 21 and flagged_share(list(results.values()), True) == 0.0


def test_malformed_text_never_crashes_the_index():
    import random

    rng = random.Random(0)
    alphabet = "ABCDEFGabcdefgzx^_=,'/0123456789|[]:()<>-{}\"!+ \nKLMV%r"
    index = MemorisationIndex.build([("tune", "L:1/8\nK:G\nGABc d2e2|d2B2 G4|]\n")])
    for n in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        index.check(text)
        index.add(f"junk{n}", text)
    assert len(index) == 501 and not index.failed
