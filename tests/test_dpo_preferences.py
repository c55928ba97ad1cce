"""Chosen/rejected selection on hand-made scores: top/bottom portions, filters, no overlap, tiny N."""

import json

import pytest

from notagen.dpo.preferences import (
    PreferenceFilters,
    PromptPreferences,
    calibrate_plagiarism_cosine,
    instrument_grouping_problem,
    sample_problem,
    select_preferences,
)


def ranked(n: int) -> dict[str, float]:
    """s00 scores highest, s{n-1} lowest."""
    return {f"s{i:02d}": 1.0 - i / n for i in range(n)}


def test_top_and_bottom_portion():
    result = select_preferences(ranked(20), portion=0.1)
    assert result.threshold == 2
    assert result.chosen == ["s00", "s01"]
    assert result.rejected == ["s18", "s19"]
    assert len(result.pairs) == 4 and ("s00", "s19") in result.pairs
    statuses = {c["name"]: c for c in result.candidates}
    assert statuses["s05"]["status"] == "excluded" and statuses["s05"]["reason"] == "below the chosen pieces"
    assert [c["rank"] for c in result.candidates] == list(range(20))


def test_filtered_pieces_are_skipped_with_their_reason():
    problems = {"s00": "bar alignment: 3 of 8 bars misaligned", "s02": "plagiarism: cosine 0.99"}
    result = select_preferences(ranked(20), portion=0.1, problems=problems)
    assert result.chosen == ["s01", "s03"]
    assert result.excluded["s00"] == problems["s00"]
    assert result.excluded["s02"] == problems["s02"]
    assert result.rejected == ["s18", "s19"]  # rejected pieces are not filtered (as the reference)


def test_tiny_n_never_overlaps_and_still_pairs():
    for n in (2, 3, 4, 5):
        result = select_preferences(ranked(n), portion=0.1)
        assert result.threshold == 1
        assert len(result.chosen) == 1 and len(result.rejected) == 1
        assert not set(result.chosen) & set(result.rejected)
        assert result.chosen == ["s00"] and result.rejected == [f"s{n - 1:02d}"]
    result = select_preferences(ranked(4), portion=0.5)
    assert result.chosen == ["s00", "s01"] and result.rejected == ["s02", "s03"]


def test_chosen_walk_never_takes_the_rejected_tail():
    problems = {name: "bar alignment: invalid" for name in ("s00", "s01", "s02")}
    result = select_preferences(ranked(4), portion=0.25, problems=problems)
    assert result.chosen == [] and result.rejected == []
    assert result.note == "every candidate above the rejected tail failed a filter"
    assert result.excluded["s03"] == "no chosen piece to pair with"
    assert result.pairs == []


def test_one_candidate_or_none():
    for scores in ({}, {"only": 0.5}):
        result = select_preferences(scores)
        assert result.pairs == [] and "a pair needs at least 2" in result.note


def test_ties_and_missing_scores_give_no_pairs():
    result = select_preferences({"a": 0.5, "b": 0.5}, portion=0.5)
    assert result.chosen == ["a"] and result.rejected == []
    assert result.excluded["b"] == "scores as high as a chosen piece"
    result = select_preferences({"a": 0.9, "b": float("nan"), "c": 0.1}, portion=0.5)
    assert result.excluded["b"] == "no score" and result.pairs == [("a", "c")]


def test_serialisable_round_trip():
    result = select_preferences(ranked(10), portion=0.2, problems={"s00": "instrument grouping: x"}, prompt="p")
    data = json.loads(json.dumps(result.to_dict()))
    again = PromptPreferences.from_dict(data)
    assert again.pairs == result.pairs and again.excluded == result.excluded and again.prompt == "p"


def test_portion_is_checked():
    with pytest.raises(ValueError):
        select_preferences(ranked(4), portion=0.0)


HEADER = "%%score {{ 1 | 2 }} 3 4\nL:1/8\nM:4/4\nK:C\n"


def test_instrument_grouping():
    grouped = HEADER + 'V:1 treble nm="Piano"\nV:2 bass nm="Piano"\nV:3 treble nm="Violin"\nV:4 bass nm="Cello"\n'
    assert instrument_grouping_problem(grouped) is None
    split = HEADER + 'V:1 treble nm="Violin"\nV:2 bass nm="Cello"\nV:3 treble nm="Violin"\n'
    assert "'Violin'" in instrument_grouping_problem(split)
    assert instrument_grouping_problem(HEADER + "V:1 treble\nV:2 bass\n") is None  # unnamed staves: nothing to check


def test_sample_problem_filters():
    good = {"valid": True, "grouping": None, "max_reference_cosine": 0.9, "memorised": False}
    assert sample_problem(good) is None
    assert sample_problem({**good, "valid": False, "error": "2 of 8 bars misaligned"}).startswith("bar alignment")
    assert sample_problem({**good, "grouping": "x"}).startswith("instrument grouping")
    copied = {**good, "max_reference_cosine": 0.97, "nearest_reference": "bwv269"}
    assert "bwv269" in sample_problem(copied)
    assert sample_problem(copied, PreferenceFilters(plagiarism_cosine=0.98)) is None
    memorised = {**good, "memorised": True, "memorised_run": {"bars": 6, "piece": "tune"}}
    assert sample_problem(memorised) == "plagiarism: copies 6 bars of reference tune"
    off = PreferenceFilters(alignment=False, grouping=False, plagiarism=False)
    assert sample_problem({**memorised, "valid": False, "grouping": "x"}, off) is None


def test_plagiarism_cosine_calibrated_on_held_out_pieces():
    import numpy as np

    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    # nearest-reference cosines of the held-out rows: 1.0, 0.8, 0.6 (a row and its scaled copy give the same)
    held_out = np.array([[2.0, 0.0], [0.8, 0.6], [0.6, -0.8]])
    assert calibrate_plagiarism_cosine(reference, held_out, percentile=100) == pytest.approx(1.0)
    assert calibrate_plagiarism_cosine(reference, held_out, percentile=50) == pytest.approx(0.8)
    assert calibrate_plagiarism_cosine(reference, held_out) == pytest.approx(np.percentile([1.0, 0.8, 0.6], 95))
    with pytest.raises(ValueError):
        calibrate_plagiarism_cosine(reference, np.zeros((0, 2)))
