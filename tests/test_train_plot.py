"""`notagen train` and `notagen plot-loss` through the CLI: a short run, then its loss curves as a PNG."""

import json

import pytest
import torch
from train_helpers import make_dataset

from notagen.cli import main


def test_cli_train_then_plot_loss(tmp_path, capsys):
    dataset = make_dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: pretrain\nmodel:\n  preset: tiny\nmax_steps: 4\nbatch_size: 2\nlog_every: 1\n"
                      "eval_every: 2\nprogress: false\n")
    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(recipe), f"dataset={dataset}", f"output_dir={run_dir}"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "trained 4 steps" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 4]

    output = tmp_path / "curves" / "loss.png"
    assert main(["plot-loss", str(run_dir), "--output", str(output)]) == 0
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert main(["plot-loss", str(run_dir)]) == 0
    assert (run_dir / "loss.png").is_file()


def test_plot_loss_without_metrics_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot-loss", str(tmp_path)]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("notagen: error: no metrics.jsonl in") and "\n" not in message


def test_train_with_a_bad_override_is_a_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 1\n")
    assert main(["train", str(recipe), "lr=fast"]) == 1
    assert capsys.readouterr().err.strip() == (
        "notagen: error: override 'lr=fast': lr: expected a number, got 'fast'")


@pytest.mark.parametrize("text", ["", "stage: pretrain\n"])
def test_train_without_dataset_says_so(tmp_path, capsys, text):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text + "max_steps: 1\n")
    assert main(["train", str(recipe)]) == 1
    assert "no dataset" in capsys.readouterr().err
