"""Labels: the built-in music21 mapping and user mapping files (YAML and CSV)."""

from __future__ import annotations

import pytest

from notagen.data.labels import Labeller, load_label_rules
from notagen.errors import InputError


def test_builtin_music21_labels_follow_the_corpus_notes():
    labeller = Labeller(builtin_music21=True)
    assert labeller.labels_for("bach/bwv66.6.mxl", corpus=True) == {
        "period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}
    assert labeller.labels_for("beethoven/opus18no1/movement1.mxl", corpus=True)["instrumentation"] == "Chamber"
    assert labeller.labels_for("mozart/k545/movement1_exposition.mxl", corpus=True)["instrumentation"] == "Keyboard"
    assert labeller.labels_for("mozart/k80/movement1.mxl", corpus=True)["instrumentation"] == "Chamber"
    assert labeller.labels_for("schumann_robert/opus48no2.mxl", corpus=True)["instrumentation"] == "Art Song"
    # Outside NotaGen's vocabulary: no label (pre-training only).
    for rel in ("palestrina/Agnus_01.krn", "oneills1850/0001-0050.abc", "trecento/Fava_Dicant_nunc_iudei.xml",
                "josquin/milleRegrets.abc", "schoenberg/opus19/movement2.mxl"):
        assert labeller.labels_for(rel, corpus=True) is None, rel
    # The built-in mapping applies to corpus pieces only, never to a user's folder that happens to be called bach.
    assert labeller.labels_for("bach/mine.xml", corpus=False) is None


def test_yaml_mapping_overrides_builtin_and_can_unlabel(tmp_path):
    mapping = tmp_path / "labels.yaml"
    mapping.write_text(
        "- pattern: 'palestrina/*'\n  period: Renaissance\n  composer: 'Palestrina, Giovanni Pierluigi da'\n"
        "  instrumentation: Choral\n"
        "- pattern: 'bach/bwv66.6*'\n  period: null\n  composer: null\n  instrumentation: null\n"
        "- pattern: '*/dvorak/*.xml'\n  period: Romantic\n  composer: 'Dvořák, Antonín'\n  instrumentation: Chamber\n",
        encoding="utf-8")
    labeller = Labeller(load_label_rules(mapping), builtin_music21=True)
    assert labeller.labels_for("palestrina/Agnus_01.krn", corpus=True)["period"] == "Renaissance"
    assert labeller.labels_for("bach/bwv66.6.mxl", corpus=True) is None
    assert labeller.labels_for("bach/bwv67.4.xml", corpus=True)["period"] == "Baroque"
    # Composer names are ASCII-folded (the model reads bytes < 128); absolute paths match too.
    dvorak = labeller.labels_for("op96.xml", path="/data/scores/dvorak/op96.xml")
    assert dvorak == {"period": "Romantic", "composer": "Dvorak, Antonin", "instrumentation": "Chamber"}


def test_yaml_mapping_form_pattern_to_fields(tmp_path):
    mapping = tmp_path / "labels.yml"
    mapping.write_text("'quartets/*.mxl': {period: Classical, composer: 'Haydn, Joseph', "
                       "instrumentation: Chamber}\n", encoding="utf-8")
    labeller = Labeller(load_label_rules(mapping))
    assert labeller.labels_for("quartets/op1.mxl")["composer"] == "Haydn, Joseph"
    assert labeller.labels_for("songs/a.mxl") is None


def test_csv_mapping(tmp_path):
    mapping = tmp_path / "labels.csv"
    mapping.write_text("pattern,period,composer,instrumentation\n"
                       "songs/*,Romantic,\"Schubert, Franz\",Art Song\n"
                       "songs/skip*,,,\n", encoding="utf-8")
    labeller = Labeller(load_label_rules(mapping))
    assert labeller.labels_for("songs/lindenbaum.xml") == {
        "period": "Romantic", "composer": "Schubert, Franz", "instrumentation": "Art Song"}
    # First match wins: the catch-all row above the empty one.
    assert labeller.labels_for("songs/skip_me.xml")["period"] == "Romantic"


@pytest.mark.parametrize("name, text, message", [
    ("labels.csv", "pattern,period\nx,Baroque\n", "missing composer, instrumentation"),
    ("labels.yaml", "- pattern: 'a/*'\n  period: Baroque\n  composer: ''\n  instrumentation: Choral\n",
     "label 'composer' must be a non-empty"),
    ("labels.yaml", "- period: Baroque\n", "needs 'pattern'"),
    ("labels.yaml", "- [unclosed\n", "invalid YAML"),
    ("labels.txt", "x", "must be .yaml, .yml or .csv"),
])
def test_bad_mapping_files_name_the_problem(tmp_path, name, text, message):
    mapping = tmp_path / name
    mapping.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_label_rules(mapping)


def test_missing_mapping_file(tmp_path):
    with pytest.raises(InputError, match="labels file not found"):
        load_label_rules(tmp_path / "nope.yaml")
