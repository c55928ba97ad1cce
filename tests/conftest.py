"""Shared test settings: CPU only, few threads (CI has 2 cores), deterministic, offline, no writes to ~/.cache."""

import os
import tempfile

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")
# Never reach the Hugging Face hub, and keep converted checkpoints and hub files out of the user's caches.
os.environ["HF_HUB_OFFLINE"] = "1"
_CACHE = tempfile.mkdtemp(prefix="notagen-test-cache-")
os.environ["NOTAGEN_CACHE_DIR"] = os.path.join(_CACHE, "notagen")
os.environ["HF_HUB_CACHE"] = os.path.join(_CACHE, "hub")

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


@pytest.fixture(scope="session")
def chorale() -> str:
    """Bach's chorale BWV 66.6 as cleaned standard ABC (4 voices, pickup bar), converted once per session."""
    from music21 import corpus

    from notagen.convert import score_to_abc

    return score_to_abc(corpus.getWork("bach/bwv66.6"))


@pytest.fixture(scope="session")
def quartet() -> str:
    """Mozart's string quartet K. 80, third movement, as cleaned standard ABC."""
    from music21 import corpus

    from notagen.convert import score_to_abc

    return score_to_abc(corpus.getWork("mozart/k80/movement3"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Caches that reports keep between runs (music-theory baselines) go to a temporary folder, not ~/.cache."""
    os.environ["NOTAGEN_CACHE"] = str(tmp_path_factory.mktemp("notagen-cache"))
