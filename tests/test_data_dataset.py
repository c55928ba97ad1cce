"""ScoreDataset (reader of a dataset folder) and the key-draw policies."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from notagen.abc.transpose import KEYS, key_to_pitch_class
from notagen.data.dataset import ScoreDataset, draw_key, original_key_name
from notagen.errors import InputError


def _write_dataset(root, records):
    (root / "pieces").mkdir(parents=True)
    with (root / "index.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
            keys = {key: f"%%score 1\nL:1/8\nK:{key}\n[V:1]{record['id']} in {key}|\n" for key in KEYS}
            piece = {"standard": "X:1\n", "interleaved": "X:1\n", "keys": keys}
            (root / "pieces" / f"{record['id']}.json").write_text(json.dumps(piece))


LABELS = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}


@pytest.fixture()
def dataset_root(tmp_path):
    records = [
        {"id": "a", "key": "Am", "labels": LABELS, "split": "train"},
        {"id": "b", "key": "Dmix", "labels": None, "split": "train"},
        {"id": "c", "key": "F#", "labels": None, "split": "eval"},
    ]
    _write_dataset(tmp_path, records)
    return tmp_path


def test_splits_and_labelled_only(dataset_root):
    assert [r["id"] for r in ScoreDataset(dataset_root).records] == ["a", "b"]
    assert len(ScoreDataset(dataset_root, split="eval")) == 1
    assert len(ScoreDataset(dataset_root, split="all")) == 3
    assert [r["id"] for r in ScoreDataset(dataset_root, labelled_only=True).records] == ["a"]
    with pytest.raises(InputError, match="unknown split"):
        ScoreDataset(dataset_root, split="test")
    with pytest.raises(InputError, match="no index.jsonl"):
        ScoreDataset(dataset_root / "pieces")


def test_text_in_original_and_chosen_key_with_prompt(dataset_root):
    data = ScoreDataset(dataset_root)
    # A minor → key signature C; D mixolydian → G.
    assert data.text(0).endswith("[V:1]a in C|\n")
    assert data.text(1).endswith("[V:1]b in G|\n")
    assert data.text(0, key="Eb").endswith("[V:1]a in Eb|\n")
    prompted = data.text(0, key="Eb", prompt=True)
    assert prompted.startswith("%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n")
    assert prompted.endswith(data.text(0, key="Eb"))
    # Unlabelled pieces never get a prompt block.
    assert data.text(1, prompt=True) == data.text(1)
    with pytest.raises(InputError, match="no text in key"):
        data.text(0, key="H")


def test_missing_piece_file_is_a_clear_error(dataset_root):
    (dataset_root / "pieces" / "b.json").unlink()
    with pytest.raises(InputError, match="cannot read piece file"):
        ScoreDataset(dataset_root).text(1)


def test_original_key_names():
    assert original_key_name({"key": "G"}) == "G"
    assert original_key_name({"key": "Am"}) == "C"
    assert original_key_name({"key": "Dmix"}) == "G"
    assert original_key_name({"key": "F#m"}) == "A"
    assert draw_key({"key": "Bbm"}, "original", random.Random(0)) == "Db"


def test_pretrain_draw_is_uniform_over_the_15_keys():
    rng = random.Random(1)
    counts = Counter(draw_key({"key": "C"}, "pretrain", rng) for _ in range(30000))
    assert set(counts) == set(KEYS)
    assert all(abs(n / 30000 - 1 / 15) < 0.01 for n in counts.values())


def test_finetune_draw_is_peaked_around_the_original_key():
    rng = random.Random(2)
    n = 40000
    counts = Counter(draw_key({"key": "Em"}, "finetune", rng) for _ in range(n))  # Em → G, pitch class 7
    offsets = Counter((key_to_pitch_class(k) - 7 + 6) % 12 - 6 for k in counts.elements())
    expected = {-3: 1, -2: 2, -1: 3, 0: 4, 1: 3, 2: 2, 3: 1}
    assert set(offsets) == set(expected)
    for offset, weight in expected.items():
        assert abs(offsets[offset] / n - weight / 16) < 0.01, offset
    # Pitch class 6 (offset -1 from G) is spelled F# or Gb half and half; pitch class 4 only as E.
    assert abs(counts["F#"] / (counts["F#"] + counts["Gb"]) - 0.5) < 0.03
    assert counts["E"] > 0 and "Cb" not in counts and "C#" not in counts


def test_finetune_enharmonic_spellings():
    rng = random.Random(3)
    # From C# major (pitch class 1): offset 0 gives Db 80 % / C# 20 %; offset -2 gives B 80 % / Cb 20 %.
    counts = Counter(draw_key({"key": "C#"}, "finetune", rng) for _ in range(40000))
    assert abs(counts["Db"] / (counts["Db"] + counts["C#"]) - 0.8) < 0.02
    assert abs(counts["B"] / (counts["B"] + counts["Cb"]) - 0.8) < 0.03
    assert all(key in KEYS for key in counts)


def test_draws_are_deterministic_under_a_seed():
    record = {"key": "Bb"}
    for stage in ("pretrain", "finetune"):
        first = [draw_key(record, stage, random.Random(42)) for _ in range(3)]
        rng_a, rng_b = random.Random(7), random.Random(7)
        assert [draw_key(record, stage, rng_a) for _ in range(50)] == [draw_key(record, stage, rng_b)
                                                                      for _ in range(50)]
        assert len(set(first)) == 1
    with pytest.raises(ValueError, match="unknown key-draw stage"):
        draw_key(record, "rl", random.Random(0))  # type: ignore[arg-type]
