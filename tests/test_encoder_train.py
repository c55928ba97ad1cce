"""`notagen encoder train` on a tiny dataset of real O'Neill tunes: loss falls, checkpoints load, resume is exact."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from notagen.cli import main
from notagen.encoder.corpus import music21_tunes, write_dataset
from notagen.encoder.loading import load_encoder
from notagen.encoder.patchilizer import MASK_ID
from notagen.encoder.train import corrupt

ARGS = ["--preset", "tiny", "--batch-size", "8", "--lr", "1e-3", "--warmup", "5", "--max-decoded", "64",
        "--patch-length", "64", "--eval-every", "10", "--eval-pieces", "8", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    pieces = music21_tunes("oneills1850", limit=64)
    for i, piece in enumerate(pieces):
        piece.split = "eval" if i % 8 == 0 else "train"
    return write_dataset(tmp_path_factory.mktemp("encoder_data") / "ds", pieces)


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_cli_loss_falls_and_checkpoints_load(dataset, tmp_path):
    torch.set_num_threads(1)
    assert main(["encoder", "train", str(dataset), str(tmp_path / "run"), "--steps", "20", *ARGS]) == 0
    records = _metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 21))
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    best = load_encoder(tmp_path / "run" / "best")
    assert best.model.config.num_layers == 2 and best.info["step"] == 20 and best.info["train_pieces"] == 56


def test_resume_continues_exactly(dataset, tmp_path):
    torch.set_num_threads(1)
    main(["encoder", "train", str(dataset), str(tmp_path / "straight"), "--steps", "12", *ARGS])
    main(["encoder", "train", str(dataset), str(tmp_path / "resumed"), "--steps", "6", *ARGS])
    main(["encoder", "train", str(dataset), str(tmp_path / "resumed"), "--steps", "12", "--resume", *ARGS])
    straight = _metrics(tmp_path / "straight" / "metrics.jsonl")
    resumed = _metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert len(resumed) == 12 and [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    a = load_encoder(tmp_path / "straight" / "last").model.state_dict()
    b = load_encoder(tmp_path / "resumed" / "last").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_corruption_modes_follow_m3():
    windows = [np.full((20, 8), 60, dtype=np.int8) for _ in range(400)]
    for w in windows:
        w[:, 0], w[:, 1:7] = 1, np.arange(65, 71)
        w[:, 7] = 2
    batch = corrupt(windows, random.Random(0))
    assert (batch.selected.sum(1) == 9).all()  # ceil(0.45 * 20)
    picked_inputs = batch.inputs[batch.selected].reshape(400, 9, 8)
    masked = (picked_inputs == MASK_ID).all(-1).all(-1)
    unchanged = (picked_inputs == batch.targets[batch.selected].reshape(400, 9, 8)).all(-1).all(-1)
    shuffled = ~masked & ~unchanged
    assert 0.72 < masked.float().mean() < 0.88
    assert 0.05 < shuffled.float().mean() < 0.15
    # Shuffling keeps the bos / eos frame and the multiset of characters.
    frame = picked_inputs[shuffled]
    assert (frame[..., 0] == 1).all() and (frame[..., 7] == 2).all()
    assert (frame[..., 1:7].sort(-1).values == torch.arange(65, 71)).all()
    # Unpicked patches are never touched.
    untouched = ~batch.selected & batch.masks.bool()
    assert torch.equal(batch.inputs[untouched], batch.targets[untouched])
    capped = corrupt(windows[:10], random.Random(1), max_decoded=16)
    assert int(capped.selected.sum()) == 16
