"""Shared test settings: CPU only, few threads (CI has 2 cores), deterministic."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: tiny models are dominated by thread overhead, and CI shares its 2 cores with other work.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
