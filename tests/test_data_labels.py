"""Labels: the built-in music21 mapping and user mapping files (YAML and CSV)."""

from __future__ import annotations

import pytest

from notagen.data.labels import (
    Labeller,
    composer_label,
    instrumentation_of,
    load_label_rules,
    period_of,
)
from notagen.errors import InputError


def test_builtin_music21_labels_follow_the_corpus_notes():
    labeller = Labeller(builtin_music21=True)
    assert labeller.labels_for("bach/bwv66.6.mxl", corpus=True) == {
        "period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}
    assert labeller.labels_for("beethoven/opus18no1/movement1.mxl", corpus=True)["instrumentation"] == "Chamber"
    assert labeller.labels_for("mozart/k545/movement1_exposition.mxl", corpus=True)["instrumentation"] == "Keyboard"
    assert labeller.labels_for("mozart/k80/movement1.mxl", corpus=True)["instrumentation"] == "Chamber"
    assert labeller.labels_for("schumann_robert/opus48no2.mxl", corpus=True)["instrumentation"] == "Art Song"
    # New labels in NotaGen's style: Renaissance polyphony, folk tunes by their collection's compiler.
    assert labeller.labels_for("palestrina/Agnus_01.krn", corpus=True) == {
        "period": "Renaissance", "composer": "Palestrina, Giovanni Pierluigi da", "instrumentation": "Choral"}
    assert labeller.labels_for("josquin/milleRegrets.abc", corpus=True)["period"] == "Renaissance"
    assert labeller.labels_for("oneills1850/0001-0050.abc", corpus=True) == {
        "period": "Traditional", "composer": "O'Neill, Francis", "instrumentation": "Folk Tune"}
    # No curated attribution: no label (pre-training only).
    for rel in ("trecento/Fava_Dicant_nunc_iudei.xml", "miscFolk/americanfifeopus.abc", "luca/gloria.mxl"):
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


@pytest.mark.parametrize("born, period", [
    # NotaGen's own composers at the period boundaries keep the period its prompts give them.
    (1678, "Baroque"),      # Vivaldi
    (1685, "Baroque"),      # Bach, Handel, Scarlatti
    (1732, "Classical"),    # Haydn
    (1770, "Classical"),    # Beethoven
    (1779, "Classical"),    # Reichardt, Louise
    (1796, "Romantic"),     # Zumsteeg, Emilie
    (1797, "Romantic"),     # Schubert
    (1906, "Romantic"),     # Shostakovich: NotaGen files 20th-century composers under Romantic
    (1525, "Renaissance"),  # Palestrina
    (1567, "Renaissance"),  # Monteverdi
    (1370, "Medieval"),     # Ciconia
])
def test_period_from_birth_year(born, period):
    assert period_of(born, None) == period


def test_period_from_death_year_alone_and_unknown():
    assert period_of(None, 1750) == "Baroque"  # born about 1690
    assert period_of(None, None) is None


def test_composer_label_from_catalogue_folder_names():
    assert composer_label("Holmès,_Augusta_Mary_Anne") == "Holmes, Augusta Mary Anne"
    assert composer_label("Hensel,_Fanny_(Mendelssohn)") == "Hensel, Fanny"
    assert composer_label("Dvořák,_Antonín") == "Dvorak, Antonin"
    assert composer_label("Indy,_Vincent_d’") == "Indy, Vincent d'"
    assert composer_label("Faisst,_Clara_Mathilda") == "Faisst, Clara"  # NotaGen's spelling of her name


@pytest.mark.parametrize("families, instrumentation", [
    (["voice", "keyboard"], "Art Song"),
    (["voice", "voice", "keyboard"], "Art Song"),
    (["voice", "woodwind", "keyboard"], "Art Song"),          # a song with flute obbligato
    (["voice", "plucked"], "Art Song"),                      # voice and guitar
    (["voice"] * 4 + ["keyboard"], "Choral"),                 # a part-song with piano
    (["voice"] * 4, "Choral"),
    (["strings"] * 4, "Chamber"),
    (["keyboard"], "Keyboard"),
    (["strings", "keyboard"], "Chamber"),
    (["strings"] * 6 + ["woodwind"] * 4 + ["brass"] * 2, "Orchestral"),
    (["voice"] * 4 + ["strings"] * 4 + ["woodwind", "keyboard"], "Vocal-Orchestral"),
    ([], None),
])
def test_instrumentation_from_part_families(families, instrumentation):
    assert instrumentation_of(families) == instrumentation


def test_metadata_labels_rank_between_user_rules_and_builtin(tmp_path):
    mapping = tmp_path / "labels.yaml"
    mapping.write_text("- pattern: 'Brahms*/*'\n  period: Romantic\n  composer: 'Brahms, Johannes'\n"
                       "  instrumentation: Choral\n", encoding="utf-8")
    labeller = Labeller(load_label_rules(mapping), builtin_music21=True)
    metadata = ("Romantic", "Brahms, Johannes", "Art Song")
    assert labeller.labels_for("Brahms,_Johannes/x.mxl", metadata=metadata)["instrumentation"] == "Choral"
    assert labeller.labels_for("Wolf,_Hugo/x.mxl", metadata=metadata)["instrumentation"] == "Art Song"
    assert labeller.labels_for("bach/bwv66.6.mxl", corpus=True, metadata=metadata)["composer"] == "Brahms, Johannes"
