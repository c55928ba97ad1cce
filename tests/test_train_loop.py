"""The training loop on the tiny preset (CPU): learning, LR schedule, exact resume, accumulation, fine-tuning."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import BACH_CHORALE, make_dataset

from notagen.checkpoint import load_checkpoint
from notagen.errors import ConfigError, InputError
from notagen.train.loop import STATE_FILE, LRSchedule, Trainer
from notagen.train.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


def tiny(dataset: Path, run_dir: Path, *overrides: str):
    base = [f"dataset={dataset}", f"output_dir={run_dir}", "model.preset=tiny", "batch_size=2", "lr=3e-3",
            "warmup_steps=2", "log_every=1", "eval_every=0", "save_every=1000", "progress=false",
            "tensorboard=false"]
    return load_recipe(None, [*base, *overrides])


def run(config, until=None) -> Trainer:
    trainer = Trainer(config)
    trainer.train(until=until)
    trainer.close()
    return trainer


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def params(trainer_or_model) -> dict[str, torch.Tensor]:
    model = getattr(trainer_or_model, "model", trainer_or_model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), key
        else:
            assert (a[key] - b[key]).abs().max().item() <= atol, key


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core machine; they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory) -> tuple[Path, Trainer]:
    """30 steps of tiny pre-training with evaluation every 10 steps."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    trainer = run(tiny(dataset, run_dir, "max_steps=30", "eval_every=10", "save_every=10", "log_every=5"))
    return run_dir, trainer


def test_loss_falls_and_checkpoints_are_written(pretrained):
    run_dir, trainer = pretrained
    records = metrics(run_dir)
    train = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(train) == 6 and len(evals) == 3
    assert train[-1] < train[0] - 1.0, train
    assert evals[-1] < evals[0], evals
    assert all(r["chars_per_s"] > 0 for r in records if "loss" in r)
    best = load_checkpoint(run_dir / "checkpoints" / "best")
    assert best.info["training"]["step"] == trainer.best_step == 30
    assert best.info["training"]["eval_loss"] == pytest.approx(min(evals))
    assert best.prompts == []  # pre-training is not prompt-conditioned
    last = load_checkpoint(run_dir / "checkpoints" / "last")
    assert_same_params(params(last.model), {k: v.cpu() for k, v in params(trainer).items()})
    assert (run_dir / STATE_FILE).is_file() and (run_dir / "recipe.yaml").is_file()


def test_eval_is_deterministic(pretrained):
    _, trainer = pretrained
    first = trainer.evaluate()
    assert trainer.evaluate() == first
    assert first == pytest.approx(trainer.last_eval)


def test_warmup_and_schedule_reach_the_stepping_optimizer(dataset, tmp_path):
    config = tiny(dataset, tmp_path, "max_steps=8", "warmup_steps=4", "schedule=linear", "min_lr_ratio=0.25",
                  "lr=1e-2")
    trainer = Trainer(config)
    curve = LRSchedule(4, 8, "linear", 0.25)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * curve(0))
    trainer.train()
    logged = [r["lr"] for r in metrics(tmp_path) if "lr" in r]
    assert logged == pytest.approx([1e-2 * curve(s) for s in range(8)])
    assert logged[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # warm-up really applies
    assert all(g["lr"] == pytest.approx(1e-2 * curve(8)) for g in trainer.optimizer.param_groups)


def test_resume_after_discarding_the_trainer_is_exact(dataset, tmp_path):
    extra = ("max_steps=8", "save_every=4", "model.dropout=0.1", "char_batch_limit=6", "eval_every=4")
    straight = run(tiny(dataset, tmp_path / "straight", *extra))
    run(tiny(dataset, tmp_path / "resumed", *extra), until=6)  # saved at 4, logged 5 and 6, then "killed"
    assert json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    resumed = Trainer(tiny(dataset, tmp_path / "resumed", *extra))
    assert resumed.step == 4
    resumed.train()
    assert_same_params(params(straight), params(resumed))
    assert metrics(tmp_path / "straight") == [
        {**r, "chars_per_s": s["chars_per_s"]} if "chars_per_s" in r else r
        for r, s in zip(metrics(tmp_path / "resumed"), metrics(tmp_path / "straight"))
    ]


def test_resume_after_kill_9_is_exact(dataset, tmp_path):
    run_dir = tmp_path / "killed"
    common = [f"dataset={dataset}", "model.preset=tiny", "batch_size=2", "lr=3e-3", "warmup_steps=2",
              "log_every=1", "eval_every=0", "save_every=3", "progress=false", "tensorboard=false",
              "model.dropout=0.1"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: pretrain\nmax_steps: 10000\n")  # far more than it will live to do
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen([sys.executable, "-m", "notagen.cli", "train", str(recipe), *common,
                                f"output_dir={run_dir}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / STATE_FILE).is_file() and len(metrics(run_dir)) >= 5:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    logged_before_kill = len(metrics(run_dir))
    saved_step = torch.load(run_dir / STATE_FILE, weights_only=True)["step"]
    assert saved_step >= 3 and saved_step % 3 == 0
    target = saved_step + 4  # the constant schedule does not depend on max_steps, so the run can stop early

    resumed = Trainer(load_recipe(recipe, [*common, f"output_dir={run_dir}", f"max_steps={target}"]))
    assert resumed.step == saved_step
    resumed.train()
    resumed.close()
    straight = run(load_recipe(recipe, [*common, f"output_dir={tmp_path / 'straight'}", f"max_steps={target}"]))
    assert_same_params(params(straight), params(resumed))
    losses = [r["loss"] for r in metrics(run_dir) if "loss" in r]
    assert len(losses) == target and logged_before_kill >= 5
    assert losses == [r["loss"] for r in metrics(tmp_path / "straight") if "loss" in r]


def test_accumulation_matches_a_bigger_batch(dataset, tmp_path):
    big = run(tiny(dataset, tmp_path / "big", "max_steps=3", "batch_size=4"))
    split = run(tiny(dataset, tmp_path / "split", "max_steps=3", "batch_size=2", "grad_accum=2"))
    # Not bit-equal: the summation order differs, and AdamW turns the round-off in gradients that are exactly
    # zero in theory (the attention key bias) into updates of up to lr; 1e-5 is far below any real difference.
    assert_same_params(params(big), params(split), atol=1e-5)
    assert [r["loss"] for r in metrics(tmp_path / "big") if "loss" in r] == pytest.approx(
        [r["loss"] for r in metrics(tmp_path / "split") if "loss" in r], abs=1e-6)


def test_finetune_starts_from_the_checkpoint_and_uses_prompts(dataset, pretrained, tmp_path):
    run_dir, _ = pretrained
    init = run_dir / "checkpoints" / "best"
    config = tiny(dataset, tmp_path, "stage=finetune", f"init_checkpoint={init}", "max_steps=2", "lr=1e-4")
    trainer = Trainer(config)
    assert_same_params(params(trainer), params(load_checkpoint(init).model))
    assert len(trainer.train_set) == 1  # only the labelled piece
    text = trainer.patchilizer.decode(trainer.stream.encode(0))
    assert text.startswith("%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n")
    trainer.train()
    saved = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert saved.prompts == [{"period": "Baroque", "composer": "Bach, Johann Sebastian",
                              "instrumentation": "Choral", "count": 1}]
    assert saved.info["training"]["stage"] == "finetune"
    assert saved.info["training"]["init_checkpoint"] == str(init)
    assert trainer.last_eval is not None  # the labelled eval chorale


def test_finetune_refuses_architecture_overrides(dataset, pretrained, tmp_path):
    init = pretrained[0] / "checkpoints" / "best"
    config = tiny(dataset, tmp_path, "stage=finetune", f"init_checkpoint={init}", "max_steps=1",
                  "model.hidden_size=128")
    with pytest.raises(ConfigError, match="model.hidden_size=128"):
        Trainer(config)


def test_existing_run_guards(dataset, pretrained):
    run_dir, _ = pretrained
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny(dataset, run_dir, "max_steps=30", "resume=false"))
    with pytest.raises(ConfigError, match="seed changed"):
        Trainer(tiny(dataset, run_dir, "max_steps=30", "seed=1"))


def test_data_workers_feed_the_same_batches(dataset, tmp_path):
    inline = run(tiny(dataset, tmp_path / "inline", "max_steps=2", "model.dropout=0.1"))
    workers = run(tiny(dataset, tmp_path / "workers", "max_steps=2", "model.dropout=0.1", "num_workers=2"))
    assert_same_params(params(inline), params(workers))


def test_draw_stream_shards_one_global_batch(dataset, pretrained):
    _, trainer = pretrained
    stream = trainer.stream
    whole = stream[5]
    assert whole["draws"] == [10, 11]
    halves = [type(stream)(stream.dataset, stream.patchilizer, stream.key_stage, stream.prompt, 2, stream.seed,
                           rank, 2)[5] for rank in (0, 1)]
    assert [h["draws"] for h in halves] == [[10], [11]]
    assert sum(h["chars"] for h in halves) == whole["chars"]
    for row, half in enumerate(halves):
        length = int(half["masks"].sum())
        assert torch.equal(half["patches"][0, :length], whole["patches"][row, :length])
    # Every epoch visits every piece once, in a seeded order that changes between epochs.
    n = len(stream.dataset)
    epochs = [[stream.piece_of(e * n + i) for i in range(n)] for e in range(4)]
    assert all(sorted(order) == list(range(n)) for order in epochs)
    assert len({tuple(order) for order in epochs}) > 1


def test_epochs_set_the_number_of_steps(dataset, tmp_path):
    # 3 train pieces, global batch 2 × 2 = 4 pieces: one step per epoch.
    trainer = Trainer(tiny(dataset, tmp_path, "epochs=3", "grad_accum=2"))
    assert trainer.total_steps == 3
    trainer = Trainer(tiny(dataset, tmp_path / "b", "epochs=3", "batch_size=1"))
    assert trainer.total_steps == 9


def test_memory_options_train_the_same_model(dataset, tmp_path):
    plain = run(tiny(dataset, tmp_path / "plain", "max_steps=2"))
    lean = run(tiny(dataset, tmp_path / "lean", "max_steps=2", "activation_checkpointing=true",
                    "optimizer=adamw_lean"))
    assert_same_params(params(plain), params(lean), atol=1e-6)
    bf16 = run(tiny(dataset, tmp_path / "bf16", "max_steps=2", "precision=bf16"))
    assert bf16.precision == "bf16"
    losses = [r["loss"] for r in metrics(tmp_path / "bf16") if "loss" in r]
    reference = [r["loss"] for r in metrics(tmp_path / "plain") if "loss" in r]
    assert losses == pytest.approx(reference, abs=0.05)  # bf16 autocast: same curve, coarser arithmetic


def test_trains_on_a_folder_written_by_data_build(tmp_path):
    from train_helpers import FIXTURES

    from notagen.cli import main

    scores = tmp_path / "scores"
    scores.mkdir()
    for name in ("model_bwv269.abc", "model_aird_ranting_highlandman.abc", "model_aird_todlen_hame.abc"):
        (scores / name).write_text((FIXTURES / name).read_text())
    built = tmp_path / "built"
    assert main(["data", "build", str(scores), "--out", str(built), "--workers", "1", "--no-progress",
                 "--eval-fraction", "0.0"]) == 0
    trainer = run(tiny(built, tmp_path / "run", "max_steps=3", "batch_size=3"))
    assert trainer.step == 3 and len(trainer.train_set) == 3
    assert all(r["loss"] > 0 for r in metrics(tmp_path / "run"))


def test_resume_follows_the_recipe_for_lr_and_length(dataset, tmp_path):
    run(tiny(dataset, tmp_path, "max_steps=4", "save_every=2", "warmup_steps=2", "lr=3e-3", "schedule=cosine"))
    longer = Trainer(tiny(dataset, tmp_path, "max_steps=12", "warmup_steps=2", "lr=1e-3", "schedule=cosine"))
    assert longer.step == 4 and longer.total_steps == 12
    expected = 1e-3 * LRSchedule(2, 12, "cosine")(4)
    assert [g["lr"] for g in longer.optimizer.param_groups] == pytest.approx([expected, expected])
    longer.train()
    logged = [r["lr"] for r in metrics(tmp_path) if "lr" in r]
    assert logged[4:] == pytest.approx([1e-3 * LRSchedule(2, 12, "cosine")(s) for s in range(4, 12)])


def test_non_finite_gradients_skip_the_update_then_stop_the_run(dataset, tmp_path, monkeypatch):
    from notagen.model import NotaGenModel
    from notagen.train.core import TrainingDiverged

    trainer = Trainer(tiny(dataset, tmp_path, "max_steps=20"))
    before = params(trainer)
    original = NotaGenModel.forward
    monkeypatch.setattr(NotaGenModel, "forward", lambda self, *a, **k: original(self, *a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match="10 optimizer steps had non-finite gradients"):
        trainer.train()
    assert trainer.update.skipped == 10
    assert_same_params(before, params(trainer))  # no NaN reached the weights


def test_min_prompt_pieces_leaves_rare_prompts_out_of_finetuning(pretrained, tmp_path):
    fiddle = {"period": "Romantic", "composer": "Aird, James", "instrumentation": "Keyboard"}
    pieces = (("model_bwv269.abc", "train", None),  # Bach chorale, from its prompt lines
              ("model_aird_ranting_highlandman.abc", "train", fiddle),
              ("model_aird_todlen_hame.abc", "train", fiddle),
              ("model_bwv40_3.abc", "eval", BACH_CHORALE))
    dataset = make_dataset(tmp_path / "data", pieces)
    init = pretrained[0] / "checkpoints" / "best"
    config = tiny(dataset, tmp_path / "run", "stage=finetune", f"init_checkpoint={init}", "max_steps=1",
                  "min_prompt_pieces=2")
    trainer = Trainer(config)
    assert trainer.prompts == [{**fiddle, "count": 2}]
    assert [r["id"] for r in trainer.train_set.records] == ["model_aird_ranting_highlandman", "model_aird_todlen_hame"]
    assert len(trainer.eval_set) == 0  # the eval chorale's prompt was left out
    trainer.close()
    with pytest.raises(InputError, match="no prompt has 3 labelled train pieces"):
        Trainer(tiny(dataset, tmp_path / "run3", "stage=finetune", f"init_checkpoint={init}", "max_steps=1",
                             "min_prompt_pieces=3"))


def test_prompt_balance_oversamples_rare_prompts():
    from collections import Counter

    from notagen.train.loop import DrawStream, prompt_weights

    def labels(composer: str) -> dict:
        return {"period": "Baroque", "composer": composer, "instrumentation": "Choral"}

    records = [{"labels": labels("Common")}] * 90 + [{"labels": labels("Rare")}] * 10
    data = type("Data", (), {"records": records, "__len__": lambda self: len(records)})()
    assert prompt_weights(data, 1.0) == [1.0] * 100
    n = len(records)

    def rare_share(balance: float) -> float:
        stream = DrawStream(data, None, "none", True, 4, seed=3, balance=balance)
        drawn = Counter(stream.piece_of(d) >= 90 for d in range(20 * n))
        return drawn[True] / (20 * n)

    # square-root balance: 90 vs 10 pieces → shares 3:1; equal balance 1:1; natural 9:1
    assert abs(rare_share(0.5) - 0.25) < 0.03
    assert abs(rare_share(0.0) - 0.5) < 0.03
    assert abs(rare_share(1.0) - 0.1) < 1e-9


def test_prompt_weights_multiply_a_prompts_share_and_reject_unknown_prompts():
    from collections import Counter

    from notagen.train.loop import DrawStream, prompt_weights

    def labels(composer: str) -> dict:
        return {"period": "Baroque", "composer": composer, "instrumentation": "Choral"}

    records = [{"labels": labels("Common")}] * 90 + [{"labels": labels("Rare")}] * 10
    data = type("Data", (), {"records": records, "__len__": lambda self: len(records)})()
    n = len(records)
    stream = DrawStream(data, None, "none", True, 4, seed=3, boosts={"Baroque | Rare | Choral": 9})
    drawn = Counter(stream.piece_of(d) >= 90 for d in range(20 * n))
    assert abs(drawn[True] / (20 * n) - 0.5) < 0.03  # natural 9:1, boosted ×9 → 1:1
    with pytest.raises(ConfigError, match="prompt_weights: unknown key 'Baroque \\| Rar \\| Choral'.*did you mean"):
        prompt_weights(data, 1.0, {"Baroque | Rar | Choral": 2})
    with pytest.raises(ConfigError, match="unknown key 'Rar'.*did you mean 'Rare'"):
        prompt_weights(data, 1.0, {"Rar": 2})
    # one field selects every prompt having it; boosts multiply
    weights = prompt_weights(data, 1.0, {"Rare": 2, "Choral": 3, "Baroque | Common | Choral": 0.5})
    assert weights[0] == 1.5 and weights[-1] == 6.0


def test_prompt_weights_recipe_values_are_checked():
    from notagen.train.recipe import load_recipe

    config = load_recipe(None, ['prompt_weights={"Baroque | Rare | Choral": 3}'])
    assert config.prompt_weights == {"Baroque | Rare | Choral": 3.0}
    assert load_recipe(None, ["prompt_weights={}"]).prompt_weights == {}
    with pytest.raises(ConfigError, match="positive weight"):
        load_recipe(None, ['prompt_weights={"a | b | c": 0}'])
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_recipe(None, ["prompt_weights=3"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_recipe(None, ['prompt_weights={"a | b | c": lots}'])
