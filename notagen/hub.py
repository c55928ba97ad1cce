"""The official NotaGen weights by name, fetched and cached with `huggingface_hub`.

A checkpoint can be named instead of given as a path:

* `hf:OWNER/REPO/FILE` (optionally `@REVISION` at the end), e.g. `hf:ElectricAlexis/NotaGen/weights_notagenx_….pth`;
* a short alias of an official file (`OFFICIAL`): `notagen-x`, `small`, `medium`, `large`, `large-finetune`,
  `large-rl`.

The file is looked up in the local Hugging Face cache first (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub), so
nothing touches the network when it is there; otherwise it is downloaded, unless `HF_HUB_OFFLINE=1`, and when that
is not possible one line says what to download and where to put it. The fine-tuned official files carry the
official prompt registry (`official_prompts`): 112 (period, composer, instrumentation) combinations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from notagen.errors import CheckpointError

OFFICIAL_REPO = "ElectricAlexis/NotaGen"
HF_PREFIX = "hf:"
PROMPTS_FILE = Path(__file__).resolve().parent / "assets" / "notagen-x-prompts.txt"


@dataclass(frozen=True)
class OfficialFile:
    """One released NotaGen weight file."""

    alias: str
    filename: str
    description: str
    prompts: bool
    """True for the fine-tuned files, which were trained with the official prompt registry."""


OFFICIAL: dict[str, OfficialFile] = {f.alias: f for f in (
    OfficialFile("notagen-x", "weights_notagenx_p_size_16_p_length_1024_p_layers_20_h_size_1280.pth",
                 "NotaGen-X: 516 M parameters, post-trained, fine-tuned and CLaMP-DPO'd (the official demo's model)",
                 True),
    OfficialFile("small", "weights_notagen_pretrain_p_size_16_p_length_2048_p_layers_12_c_layers_3_h_size_768_"
                          "lr_0.0002_batch_8.pth", "pretrained small, 110 M parameters (unconditional)", False),
    OfficialFile("medium", "weights_notagen_pretrain_p_size_16_p_length_2048_p_layers_16_c_layers_3_h_size_1024_"
                           "lr_0.0001_batch_4.pth", "pretrained medium, 244 M parameters (unconditional)", False),
    OfficialFile("large", "weights_notagen_pretrain_p_size_16_p_length_1024_p_layers_20_c_layers_6_h_size_1280_"
                          "lr_0.0001_batch_4.pth", "pretrained large, 516 M parameters (unconditional)", False),
    OfficialFile("large-finetune", "weights_notagen_pretrain-finetune_p_size_16_p_length_1024_p_layers_c_layers_6_"
                                   "20_h_size_1280_lr_1e-05_batch_1.pth",
                 "large, fine-tuned on the prompted classical set", True),
    OfficialFile("large-rl", "weights_notagen_pretrain-finetune-RL3_beta_0.1_lambda_10_p_size_16_p_length_1024_"
                             "p_layers_20_c_layers_6_h_size_1280_lr_1e-06_batch_1.pth",
                 "large, fine-tuned, then 3 CLaMP-DPO iterations", True),
)}
ALIASES = {"x": "notagen-x", "notagenx": "notagen-x"}
_BY_FILENAME = {f.filename: f for f in OFFICIAL.values()}


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face model repository."""

    repo: str
    filename: str
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision or 'main'}/{self.filename}"

    @property
    def official(self) -> OfficialFile | None:
        return _BY_FILENAME.get(Path(self.filename).name) if self.repo == OFFICIAL_REPO else None


def parse_name(spec: str) -> HubFile | None:
    """`hf:OWNER/REPO/FILE[@REV]` or an official alias → the hub file; None for anything else (a local path)."""
    key = spec.strip().lower()
    key = ALIASES.get(key, key)
    if key in OFFICIAL:
        return HubFile(OFFICIAL_REPO, OFFICIAL[key].filename)
    if not spec.startswith(HF_PREFIX):
        return None
    rest = spec[len(HF_PREFIX):]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = rest.strip("/").split("/")
    if len(parts) < 3 or not all(parts) or (revision is not None and not revision):
        raise CheckpointError(f"{spec!r}: expected hf:OWNER/REPO/FILE[@REVISION], e.g. "
                              f"hf:{OFFICIAL_REPO}/{OFFICIAL['notagen-x'].filename}")
    return HubFile("/".join(parts[:2]), "/".join(parts[2:]), revision)


def official_file(path: str | Path) -> OfficialFile | None:
    """The official file a local path is (by its file name: the released names are unique), if any."""
    return _BY_FILENAME.get(Path(path).name)


def official_prompts() -> list[dict]:
    """The official prompt registry: [{period, composer, instrumentation, count}] (count 0: not published)."""
    prompts = []
    for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        period, composer, instrumentation = line.split("_")
        prompts.append({"period": period, "composer": composer, "instrumentation": instrumentation, "count": 0})
    return prompts


def prompts_for(path: str | Path) -> list[dict]:
    """The prompt registry that comes with a local official weight file (by name); [] for any other file."""
    official = official_file(path)
    return official_prompts() if official is not None and official.prompts else []


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (read at call time, so HF_HUB_CACHE / HF_HOME set later count)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _how_to_get(file: HubFile, cache: Path, reason: str) -> CheckpointError:
    name = Path(file.filename).name
    return CheckpointError(
        f"{file.repo}/{file.filename} is not in the Hugging Face cache ({cache}) and {reason}: download {file.url} "
        f"and pass --checkpoint /path/to/{name}, or on a connected machine run `hf download {file.repo} "
        f"{file.filename}` (HF_HUB_CACHE={cache})")


def download(file: HubFile) -> Path:
    """The local path of a hub file: from the cache, else downloaded (unless offline); CheckpointError otherwise."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = hub_cache_dir()
    try:
        return Path(hf_hub_download(file.repo, file.filename, revision=file.revision, cache_dir=cache,
                                    local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if offline():
        raise _how_to_get(file, cache, "HF_HUB_OFFLINE is set")
    try:
        return Path(hf_hub_download(file.repo, file.filename, revision=file.revision, cache_dir=cache))
    except (EntryNotFoundError, RepositoryNotFoundError) as error:
        raise CheckpointError(f"{file.repo}/{file.filename}: no such file on the Hugging Face hub "
                              f"({type(error).__name__})") from error
    except Exception as error:  # network failures come as several types (httpx, OSError, hub errors)
        raise _how_to_get(file, cache, f"cannot be downloaded ({type(error).__name__})") from error


def describe() -> str:
    """One line per official alias, for help texts and errors."""
    return "; ".join(f"{f.alias}: {f.description}" for f in OFFICIAL.values())


__all__ = ["ALIASES", "HubFile", "OFFICIAL", "OFFICIAL_REPO", "OfficialFile", "download", "hub_cache_dir",
           "official_file", "official_prompts", "parse_name", "prompts_for"]
