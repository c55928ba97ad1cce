"""`notagen plot-loss RUN_DIR`: the train and eval loss curves of a run as a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from notagen.errors import InputError
from notagen.io import atomic_path
from notagen.train.core import METRICS_FILE, read_metrics


def loss_points(run_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train points, eval points) as (step, loss) from RUN_DIR/metrics.jsonl; unreadable lines are skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise InputError(f"no {METRICS_FILE} in {run_dir} (is it a training run folder?)")
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    for record in read_metrics(path):
        if "step" not in record:
            continue
        if "loss" in record:
            train[int(record["step"])] = float(record["loss"])
        if "eval_loss" in record:
            evals[int(record["step"])] = float(record["eval_loss"])
    return sorted(train.items()), sorted(evals.items())


def plot_loss_command(run_dir: Path, output: Path | None = None) -> int:
    """Plot the train and eval loss of a training run to a PNG.

    Args:
        run_dir: the run folder (the recipe's output_dir) holding metrics.jsonl.
        output: PNG to write; default RUN_DIR/loss.png.

    Examples:
        notagen plot-loss runs/mini-pretrain
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = loss_points(run_dir)
    if not train and not evals:
        raise InputError(f"{Path(run_dir) / METRICS_FILE} holds no loss values yet")
    output = Path(output) if output is not None else Path(run_dir) / "loss.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        axes.plot(*zip(*train), label="train", linewidth=1.2)
    if evals:
        axes.plot(*zip(*evals), label="eval", marker="o", markersize=3, linewidth=1.2)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats per character)")
    axes.set_title(Path(run_dir).resolve().name)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    print(f"wrote {output}")
    return 0
