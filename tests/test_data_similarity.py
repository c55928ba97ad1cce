"""Near-duplicate detection on melodies and the grouping of works into split groups."""

from __future__ import annotations

from fractions import Fraction

from score_fixtures import tune

from notagen.data.similarity import group_pieces, melody_line, melody_shingles, near_duplicate_pairs


def _events(pitches: list[int], step: Fraction = Fraction(1), start: Fraction = Fraction(0)):
    return [(start + i * step, p, step) for i, p in enumerate(pitches)]


def test_melody_line_is_the_top_voice_on_the_beats():
    soprano = _events([72, 74, 76, 77])
    # The alto moves in eighths under a held soprano note: its notes are never the top of what sounds.
    alto = _events([60, 62, 64, 65, 67, 65, 64, 62], Fraction(1, 2))
    assert melody_line(soprano + alto) == [72, 74, 76, 77]
    # Off-beat passing notes and repeated notes are skipped.
    passing = _events([60, 62, 64, 63, 64, 66], Fraction(1, 2))
    assert melody_line(passing) == [60, 64]


def test_shingles_ignore_key_and_harmony_but_not_the_tune():
    melody = tune(1)
    same_elsewhere = [(o, p + 7, d) for o, p, d in _events(melody)] + _events([40] * 24)  # transposed, with a bass
    assert melody_shingles(_events(melody)) == melody_shingles(same_elsewhere)
    assert not set(melody_shingles(_events(melody))) & set(melody_shingles(_events(tune(2))))
    assert melody_shingles(_events([60, 62, 64])) == []


def test_near_duplicates_by_containment():
    a = melody_shingles(_events(tune(1, 40)))
    half = melody_shingles(_events(tune(1, 40)[:20]))            # the first half of a: contained in a
    other = melody_shingles(_events(tune(2, 40)))
    short = melody_shingles(_events(tune(1, 8)))                  # too short to judge
    pairs = near_duplicate_pairs({"a": a, "half": half, "other": other, "short": short})
    assert pairs == [("a", "half", 1.0)]
    # Figures shared by very many pieces carry no identity: with a low cap nothing is left to match.
    assert near_duplicate_pairs({"a": a, "half": half, "b": list(a)}, max_shared_by=1) == []


def test_groups_join_works_and_their_near_duplicates_transitively():
    works = {"q-m1": "quartet", "q-m2": "quartet", "song": "lieder/song", "hymn": "corpus/hymn",
             "alone": "corpus/alone", "tune": "folk/tune"}
    pairs = [("q-m2", "song", 0.9), ("hymn", "song", 0.6), ("unknown", "alone", 1.0)]
    groups = group_pieces(works, pairs)
    # A group is named after the smallest work name in it, whatever the order of the pairs.
    assert groups == {"q-m1": "corpus/hymn", "q-m2": "corpus/hymn", "song": "corpus/hymn", "hymn": "corpus/hymn",
                      "alone": "corpus/alone", "tune": "folk/tune"}
    assert group_pieces(works, list(reversed(pairs))) == groups
