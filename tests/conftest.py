"""Shared test settings: CPU only, few threads (CI has 2 cores), deterministic."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Tiny models are dominated by per-op overhead: one thread is as fast, and far faster when other jobs share
    the cores (CI has 2). Restored afterwards in case the code under test changes it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
