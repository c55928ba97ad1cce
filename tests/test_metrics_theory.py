"""The music-theory report on pieces with known answers: a Bach chorale, hand-made passages with exactly one
parallel fifth, a whole-bar rest, octave doubling, a part out of range, a single-line reel; and one end-to-end
report on pieces written by the bundled model next to real chorales."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from notagen.abc.interleave import deinterleave
from notagen.metrics.theory import METRIC_KEYS, analyse_text, chord_root, is_tertian, parse_piece, prompt_as_asked
from notagen.metrics.theory_report import format_cell, real_baselines, summarise

FIXTURES = Path(__file__).parent / "fixtures"


def passage(voices: list[tuple[str, str]], bars: list[list[str]], meter: str = "4/4", unit: str = "1/4",
            key: str = "C") -> str:
    """Interleaved ABC: `voices` are (definition, name) pairs, `bars` one list of voice texts per bar."""
    header = [f"X:1\nL:{unit}\nM:{meter}\nK:{key}"]
    header += [f'V:{i + 1} {clef} nm="{name}"' for i, (clef, name) in enumerate(voices)]
    body = []
    for number, bar in enumerate(bars):
        end = "|]" if number == len(bars) - 1 else "|"
        body.append("".join(f"[V:{i + 1}]{text}{end}" for i, text in enumerate(bar)))
    return "\n".join(header + body) + "\n"


def values(text: str, instrumentation: str | None = None, **kwargs) -> dict:
    result = analyse_text(text, instrumentation, **kwargs)
    assert "error" not in result, result
    return result


def test_a_bach_chorale_ends_on_its_tonic_in_four_voices(chorale):
    """BWV 66.6 (f♯ minor, ends on an F♯ major chord with F♯ in the bass): tonic ending, SATB, no parallels."""
    result = values(chorale, "Choral")
    v, d = result["values"], result["detail"]
    assert d["key"] == "f# minor" and d["final_chord"][0] % 12 == 6 and v["tonic_ending"] == 1.0
    assert v["beat_triads"] >= 0.9 and d["beat_chords"] >= 30
    assert v["parallel_fifths"] == 0 and v["parallel_octaves"] == 0
    assert v["whole_bar_rests"] == 0 and v["out_of_range_pieces"] == 0 and v["keys_differ"] == 0
    assert v["key_agrees"] == 1.0
    assert v["instrumentation_fit"] == 1.0 and d["ensemble"] == "SATB choir"
    assert v["sections_4n"] is None and v["prompt_as_asked"] is None  # not a single line; not generated
    assert set(v) == set(METRIC_KEYS)


def test_exactly_one_parallel_fifth_and_one_whole_bar_rest():
    # c/F and d/G are fifths, both voices rise: one parallel fifth; d/G → e/C is contrary motion. Bar 2 rests in
    # the alto: one of four part-bars.
    text = passage([("treble", "Soprano"), ("treble", "Alto")], [["c d e f", "F G C D"], ["g4", "z4"]])
    result = values(text, "Choral")
    v, d = result["values"], result["detail"]
    assert d["parallels"]["fifths"] == 1 and d["parallels"]["octaves"] == 0
    assert d["parallels"]["where"] == ["5th 1-2 at 1"]
    assert d["beats"] == 8 and v["parallel_fifths"] == pytest.approx(12.5)
    assert v["whole_bar_rests"] == pytest.approx(0.25)
    # Fifths reached by contrary motion, or with one voice holding, are not parallels.
    contrary = passage([("treble", "Soprano"), ("bass", "Bass")], [["c d e2", "F, G,, C,2"]])
    assert values(contrary)["detail"]["parallels"]["fifths"] == 0
    held = passage([("treble", "Soprano"), ("treble", "Alto")], [["c d e2", "F2 A2"]])
    assert values(held)["detail"]["parallels"]["fifths"] == 0


def test_octave_doubling_counts_apart_between_instruments_only():
    lines = ["c d e f", "C D E F"]
    strings = values(passage([("treble", "Violin I"), ("treble", "Violin II")], [lines]))["detail"]["parallels"]
    assert strings["doublings"] == 3 and strings["octaves"] == 0
    voices = values(passage([("treble", "Soprano"), ("treble", "Alto")], [lines]))["detail"]["parallels"]
    assert voices["octaves"] == 3 and voices["doublings"] == 0
    # One octave motion between instruments that mostly go their own ways is a parallel, not a doubling …
    violins = [("treble", "Violin I"), ("treble", "Violin II")]
    single = values(passage(violins, [["c d e g", "C D G E"], ["f a g2", "A F B2"]]))["detail"]["parallels"]
    assert single["octaves"] == 1 and single["doublings"] == 0
    # … but a line in octaves with the other at least half the time doubles it (colla parte), even without runs.
    colla = [["c d g e", "C D C E"]]
    assert values(passage(violins, colla))["detail"]["parallels"] | {"where": []} == \
        {"fifths": 0, "octaves": 0, "doublings": 1, "where": []}
    assert values(passage([("treble", "Soprano"), ("treble", "Alto")], colla))["detail"]["parallels"]["octaves"] == 1


QUARTET = [("treble", "Violin I"), ("treble", "Violin II"), ("alto", "Viola"), ("bass", "Violoncello")]


def test_instrumentation_fit_names_clefs_and_ranges():
    bar = ["e2 g2", "c2 e2", "G2 c2", "C,2 C,2"]
    fit = values(passage(QUARTET, [bar]), "Chamber")
    assert fit["values"]["instrumentation_fit"] == 1.0 and fit["detail"]["ensemble"] == "string quartet"
    # A viola in treble clef, or an SATB score, is not a string quartet.
    treble_viola = values(passage(QUARTET[:2] + [("treble", "Viola")] + QUARTET[3:], [bar]), "Chamber")
    assert treble_viola["values"]["instrumentation_fit"] == 0.0
    assert treble_viola["detail"]["fit_reasons"] == ["Viola in treble clef"]
    satb = [("treble", "Soprano"), ("treble", "Alto"), ("bass", "Tenor"), ("bass", "Bass")]
    chorale_like = values(passage(satb, [["e2 g2", "c2 e2", "G2 A2", "C,2 C,2"]]), "Chamber")
    assert chorale_like["values"]["instrumentation_fit"] == 0.0
    assert chorale_like["detail"]["fit_reasons"] == ["SATB choir is not a Chamber ensemble"]
    # A violin's C3 lies below its G3 (with the table's 2-semitone margin): out of range, and no fit.
    low = values(passage(QUARTET, [["C,2 g2", "c2 e2", "G2 c2", "C,2 C,2"]]), "Chamber")
    assert low["values"]["out_of_range_pieces"] == 1.0
    assert low["values"]["out_of_range_notes"] == pytest.approx(1 / 8)
    assert low["detail"]["out_of_range"] == ["Violin 48 in bar 1"]
    assert low["values"]["instrumentation_fit"] == 0.0
    # Art Song is a voice and a piano (an unnamed grand staff is a keyboard).
    song = ("X:1\nL:1/4\nM:4/4\nK:C\n%%score 1 {2 | 3}\nV:1 treble nm=\"Voice\"\nV:2 treble nm=\"Piano\"\nV:3 bass\n"
            "[V:1]c d e f|[V:2]E G c A|[V:3]C, G,, C, F,|\n[V:1]e4|][V:2]G4|][V:3]C,4|]\n")
    art = values(song, "Art Song")
    assert art["values"]["instrumentation_fit"] == 1.0 and art["detail"]["ensemble"] == "voice and piano"


def test_fermatas_key_signatures_and_keys_of_voices():
    aligned = passage([("treble", "Soprano"), ("bass", "Bass")], [["c d e !fermata!c", "C, G,, C, !fermata!C,"]])
    assert values(aligned)["values"]["fermatas_aligned"] == 1.0
    lone = passage([("treble", "Soprano"), ("bass", "Bass")], [["c d e !fermata!c", "C, G,, C, C,"]])
    assert values(lone)["values"]["fermatas_aligned"] == 0.0
    # A bass that starts in a key of its own (as generated pieces do: `[K:G]`).
    keys = passage([("treble", "Soprano"), ("bass", "Bass")], [["c d e c", "[K:G] C, G,, C, C,"]])
    assert values(keys)["values"]["keys_differ"] == 1.0
    # C major music under a three-flat signature: the analysed key does not agree with the signature.
    wrong = passage([("treble", "Soprano"), ("bass", "Bass")], [["c =e g =e", "C, G,, =E, C,"], ["c4", "C,4"]],
                    key="Eb")
    assert values(wrong)["values"]["key_agrees"] == 0.0


def test_a_single_line_reel_has_two_eight_bar_sections_with_repeats():
    result = values((FIXTURES / "abc_acacia_reel.abc").read_text())
    v, d = result["values"], result["detail"]
    assert d["sections"] == [8.0, 8.0] and v["sections_4n"] == 1.0 and v["repeats"] == 1.0
    assert v["tonic_ending"] == 1.0  # a reel in G ends on G
    assert v["beat_triads"] is None and v["parallel_fifths"] is None and v["fermatas_aligned"] is None


def test_distinct_melodic_patterns_see_a_transposed_repeat():
    # Bars 5-8 repeat bars 1-4 a fifth higher: of the 5 four-bar windows, the first and the last are one pattern.
    tune = passage([("treble", "Flute")], [["c d e f"], ["g4"], ["e d c2"], ["G2 c2"],
                                            ["g a b c'"], ["d'4"], ["b a g2"], ["d2 g2"]])
    result = values(tune)
    assert result["values"]["distinct_patterns"] == pytest.approx(4 / 5)
    assert result["values"]["sections_4n"] == 1.0 and result["values"]["repeats"] == 0.0
    assert result["values"]["leaps"] == 0.0


def test_leaps_over_an_octave():
    text = passage([("treble", "Violin")], [["G, b z g"], ["G,4"]])  # G3→B5 is a leap; the rest breaks b→g
    result = values(text)
    assert result["detail"]["notes"] == 4 and result["values"]["leaps"] == pytest.approx(100 * 2 / 4)


def test_chords_and_prompt_lines():
    assert is_tertian([60, 64, 67]) and is_tertian([55, 59, 62, 65]) and is_tertian([43, 59, 65])  # V7, no 5th
    assert not is_tertian([60, 62, 67]) and not is_tertian([60, 67])
    assert chord_root([52, 60, 67]) == 0 and chord_root([62]) == 2
    asked = {"period": "Classical", "composer": "Haydn, Joseph", "instrumentation": "Chamber"}
    faithful = "%Classical\n%Haydn, Joseph\n%Chamber\n%end\nL:1/8\n"
    rewritten = "%Classical\n%Haydn, Joseph\n%Chamber\n%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\nL:1/8\n"
    assert prompt_as_asked(faithful, asked) == (True, ["Classical", "Haydn, Joseph", "Chamber"])
    assert prompt_as_asked(rewritten, asked)[0] is False
    assert prompt_as_asked("L:1/8\n", asked) == (None, [])


def test_errors_and_summaries():
    bad = analyse_text("X:1\nL:1/4\nM:4/4\nK:C\n[V:1]z4|z4|]\n")
    assert bad == {"error": "the score has no notes"}
    assert "error" in analyse_text("")
    good = [{"values": {k: None for k in METRIC_KEYS} | {"tonic_ending": x}, "detail": {"ensemble": "e"}}
            for x in (1.0, 0.0, 1.0, 1.0)]
    summary = summarise(good + [bad], ["a", "b", "c", "d", "bad"])
    entry = summary.metrics["tonic_ending"]
    assert entry["n"] == 4 and entry["mean"] == 0.75 and entry["se"] == pytest.approx(0.5 / 2)
    assert summary.metrics["leaps"] == {"mean": None, "se": None, "n": 0}
    assert summary.errors[0].startswith("bad: ") and summary.ensembles == {"e": 4}
    assert format_cell(entry, "share") == "75.0 ± 25.0 % (4)"
    assert format_cell({"mean": 3.0, "se": math.nan, "n": 1}, "rate") == "3.00 (1)"
    assert format_cell({"mean": None, "n": 0}, "rate") == "– (0)"


def test_parse_keeps_staves_of_one_part_together():
    song = ("X:1\nL:1/4\nM:4/4\nK:C\n%%score {1 | 2}\nV:1 treble\nV:2 bass\n"
            "[V:1]c d e f|[V:2]C, D, E, F,|\n")
    piece = parse_piece(song)
    assert len(piece.staves) == 2 and len(piece.instruments) == 1
    assert piece.instruments[0][1].name == "Piano"


@pytest.fixture(scope="module")
def chorale_reference(tmp_path_factory):
    """A reference dataset of real chorales labelled with the bundled model's Bach prompt: 3 eval, 1 train."""
    from music21 import corpus

    from notagen.convert import score_to_abc
    from notagen.encoder.corpus import Piece, write_dataset

    labels = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}
    pieces = [Piece(work.replace("/", "-"), score_to_abc(corpus.getWork(work), interleaved=True), dict(labels),
                    "bach", split)
              for work, split in (("bach/bwv66.6", "eval"), ("bach/bwv269", "eval"), ("bach/bwv40.3", "eval"),
                                  ("bach/bwv153.1", "train"))]
    return write_dataset(tmp_path_factory.mktemp("theory") / "reference", pieces)


def test_real_baselines_are_cached_per_piece(chorale_reference, tmp_path, monkeypatch):
    prompt = "Baroque | Bach, Johann Sebastian | Choral"
    first = real_baselines(chorale_reference, [prompt], min_real=2, cache_dir=tmp_path)
    assert first[prompt]["source"] == "eval" and len(first[prompt]["results"]) == 3
    assert len(list((tmp_path / "theory").glob("*-*.json"))) == 1
    import notagen.metrics.theory_report as theory_report

    monkeypatch.setattr(theory_report, "analyse_text", lambda *a, **k: pytest.fail("a cached piece was analysed again"))
    again = real_baselines(chorale_reference, [prompt], min_real=2, cache_dir=tmp_path)
    assert again[prompt]["results"] == first[prompt]["results"]
    # Fewer held-out pieces than asked for: the prompt's train pieces join (and say so).
    monkeypatch.undo()
    more = real_baselines(chorale_reference, [prompt], min_real=5, cache_dir=tmp_path)
    assert more[prompt]["source"] == "eval+train" and len(more[prompt]["results"]) == 4


def test_eval_reports_theory_of_bundled_model_pieces_next_to_real_chorales(chorale_reference, tmp_path):
    from notagen.cli import main

    pieces = tmp_path / "pieces"
    assert main(["generate", "--period", "Baroque", "--composer", "Bach, Johann Sebastian", "--instrumentation",
                 "Choral", "-n", "2", "--max-bars", "8", "--seed", "1", "--formats", "abc", "musicxml",
                 "--device", "cpu", "--output", str(pieces)]) == 0
    out = tmp_path / "report"
    assert main(["eval", str(pieces), "--reference", str(chorale_reference), "--out", str(out),
                 "--theory-min-real", "2", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    entry = report["theory"]["prompts"]["Baroque | Bach, Johann Sebastian | Choral"]
    assert entry["generated"]["n_pieces"] == 2 and entry["real"]["n_pieces"] == 3 and entry["real_source"] == "eval"
    real = entry["real"]["metrics"]
    assert real["tonic_ending"]["n"] == 3 and real["instrumentation_fit"]["mean"] == 1.0
    generated = entry["generated"]["metrics"]
    assert generated["prompt_as_asked"]["n"] == 2 and generated["whole_bar_rests"]["n"] == 2
    assert sorted(p["name"].split("-seed")[0] for p in report["theory"]["per_piece"]) == ["piece-001", "piece-002"]
    markdown = (out / "report.md").read_text()
    assert "## Music theory" in markdown and "| metric | generated | real held-out (eval split) |" in markdown
    assert "| ends on its tonic chord (root and bass) |" in markdown
    assert (out / "theory.png").stat().st_size > 10_000


def test_voices_sharing_a_staff_are_judged_by_their_own_ranges():
    # SATB on two staves: a MusicXML part is named after its first voice, so the Bass's G2 was once a "Tenor" note
    # out of range; each voice of a `( … )` staff keeps the instrument its own V: line names.
    text = ("X:1\n%%score [ ( 1 2 ) | ( 3 4 ) ]\nL:1/4\nM:4/4\nK:C\n"
            'V:1 treble nm="Soprano"\nV:2 treble nm="Alto"\nV:3 bass nm="Tenor"\nV:4 bass nm="Bass"\n'
            "[V:1]e d c d|[V:2]G G G F|[V:3]G, G, E, D,|[V:4]C, G,, A,, G,,|\n"
            "[V:1]e2 c2|][V:2]G2 G2|][V:3]G,2 E,2|][V:4]C,2 C,2|]\n")
    piece = parse_piece(text)
    assert [[i.name for i in s.voice_instruments] for s in piece.staves] == [["Soprano", "Alto"], ["Tenor", "Bass"]]
    assert {e.voice for e in piece.staves[1].events} == {0, 1}
    result = analyse_text(text, "Choral")
    assert result["values"]["out_of_range_notes"] == 0.0 and result["values"]["tonic_ending"] == 1.0
    standard = parse_piece(deinterleave(text))  # its body's bare `V:1` lines do not replace the definitions
    assert [[i.name for i in s.voice_instruments] for s in standard.staves] == [["Soprano", "Alto"], ["Tenor", "Bass"]]
    too_low = text.replace("[V:4]C, G,, A,, G,,", "[V:4]C, G,, A,, C,,,")  # C1: below any bass
    assert analyse_text(too_low, "Choral")["detail"]["out_of_range"] == ["Bass 24 in bar 1"]
