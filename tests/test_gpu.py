"""The CUDA-only code paths: fused AdamW, the fp16 loss scaler, NCCL. Run with `pytest -m gpu` on a CUDA machine.

Deselected by default (`-m 'not slow and not gpu'`); selected without a device they fail, so a GPU run that found
no GPU cannot pass by skipping.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import make_dataset

from notagen.checkpoint import load_checkpoint
from notagen.config import ModelConfig
from notagen.model import NotaGenModel
from notagen.train.core import GuardedStep, build_optimizer, trainable
from notagen.train.loop import Trainer
from notagen.train.recipe import load_recipe

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent
COMMON = ["model.preset=tiny", "model.dropout=0.0", "batch_size=4", "grad_accum=1", "max_steps=4", "lr=3e-3",
          "warmup_steps=1", "log_every=1", "eval_every=4", "save_every=2", "progress=false", "tensorboard=false",
          "device=cuda"]


@pytest.fixture(autouse=True)
def cuda() -> None:
    assert torch.cuda.is_available(), "pytest -m gpu needs a CUDA device"


def _model() -> NotaGenModel:
    torch.manual_seed(0)
    return NotaGenModel(ModelConfig(patch_length=32, patch_layers=1, char_layers=1, hidden_size=64)).cuda()


def test_fused_adamw_on_cuda_matches_the_plain_kernel():
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(fused_model, lr=1e-2, weight_decay=0.1)
    plain = build_optimizer(plain_model, lr=1e-2, weight_decay=0.1, lean=True)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    patches = torch.randint(1, 128, (2, 6, 16), device="cuda")
    masks = torch.ones(2, 6, device="cuda")
    for model, optimizer in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):
            model(patches, masks).backward()
            optimizer.step()
            optimizer.zero_grad()
    worst = max((a - b).abs().max().item() for a, b in zip(fused_model.parameters(), plain_model.parameters()))
    assert worst < 1e-4, worst
    assert any((a != b).any() for a, b in zip(fused_model.parameters(), _model().parameters()))


def test_fp16_scaler_drops_an_overflowing_update_and_lowers_its_scale():
    model = _model()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.0)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 16)
    step = GuardedStep(optimizer, trainable(model), grad_clip=1.0, scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    patches = torch.randint(1, 128, (2, 6, 16), device="cuda")
    masks = torch.ones(2, 6, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(patches, masks)
    scaler.scale(loss * float("inf")).backward()  # every gradient overflows
    step(0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the update was dropped
    assert scaler.get_scale() < 2.0 ** 16
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(patches, masks)
    scaler.scale(loss).backward()
    step(1)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # a finite one is applied


def test_fp16_training_resumes_where_it_stopped(tmp_path):
    """Four fp16 steps in one go equal two, a resume (weights, optimizer, scaler from train_state.pt) and two
    (to float rounding: CUDA's atomic adds in some backward kernels do not sum in a fixed order)."""
    dataset = make_dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: pretrain\n")
    common = [f"dataset={dataset}", *COMMON, "precision=fp16"]

    def run(name: str, *extra: str) -> Trainer:
        trainer = Trainer(load_recipe(recipe, [*common, f"output_dir={tmp_path / name}", *extra]))
        trainer.train()
        trainer.close()
        return trainer

    whole = run("whole")
    assert whole.precision == "fp16" and whole.scaler.is_enabled()
    run("parts", "max_steps=2")
    parts = run("parts")
    one, two = whole.model.state_dict(), parts.model.state_dict()
    assert whole.scaler.get_scale() == parts.scaler.get_scale()
    assert max((one[k].float() - two[k].float()).abs().max().item() for k in one) < 1e-4
    losses = [json.loads(line).get("loss") for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all(loss is None or loss == loss for loss in losses)  # finite (no NaN) under fp16


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one device per process: 2 GPUs")
def test_two_nccl_processes_match_one(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: pretrain\n")
    common = [f"dataset={dataset}", *COMMON, "precision=fp32", "max_steps=3", "grad_accum=2", "eval_every=3",
              "save_every=3"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "notagen.cli", "train", str(recipe), *common, f"output_dir={tmp_path / 'ddp'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = Trainer(load_recipe(recipe, [*common, f"output_dir={tmp_path / 'one'}"]))
    single.train()
    single.close()
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last").model.state_dict()
    one = {k: v.cpu() for k, v in single.model.state_dict().items()}
    worst = max((ddp[k].cpu() - one[k]).abs().max().item() for k in one)
    assert worst <= 1e-4, worst
