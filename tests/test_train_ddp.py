"""Two gloo processes under torchrun train exactly what one process trains with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import make_dataset

from notagen.checkpoint import load_checkpoint
from notagen.train.loop import Trainer
from notagen.train.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_match_one(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    common = [f"dataset={dataset}", "model.preset=tiny", "model.dropout=0.0", "batch_size=4", "grad_accum=2",
              "max_steps=3", "lr=3e-3", "warmup_steps=1", "log_every=1", "eval_every=3", "save_every=3",
              "progress=false", "tensorboard=false"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: pretrain\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "notagen.cli", "train", str(recipe), *common, f"output_dir={tmp_path / 'ddp'}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Trainer(load_recipe(recipe, [*common, f"output_dir={tmp_path / 'one'}"]))
        single.train()
        single.close()
    finally:
        torch.set_num_threads(threads)

    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last").model.state_dict()
    one = single.model.state_dict()
    worst = max((ddp[k] - one[k]).abs().max().item() for k in one)
    assert worst <= 1e-5, worst
    torch.manual_seed(0)
    initial = Trainer(load_recipe(recipe, [*common, f"output_dir={tmp_path / 'fresh'}"])).model.state_dict()
    assert max((initial[k] - one[k]).abs().max().item() for k in one) > 1e-3  # training moved the weights

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r.get("loss", r.get("eval_loss")) for r in map(json.loads, lines)]

    assert losses("ddp") == pytest.approx(losses("one"), abs=1e-6)
    assert len(losses("ddp")) == 4  # three steps and one evaluation, written once (rank 0 only)
