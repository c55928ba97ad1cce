"""`notagen eval` end to end on real tunes: report files, encoder identity on every encoder number, prompts from
% lines and manifest.json, a planted verbatim copy flagged."""

from __future__ import annotations

import json

import pytest
import torch

from notagen.cli import main
from notagen.encoder.corpus import music21_tunes, write_dataset
from notagen.encoder.loading import save_encoder
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.metrics.evaluate import normalise_generated, read_generated
from notagen.prompt import Prompt

# Two made-up prompts over real tunes (labels chosen for the test: reels vs jigs of Ryan's Mammoth).
REEL = {"period": "Romantic", "composer": "Ryan, William Bradbury", "instrumentation": "Fiddle"}
JIG = {"period": "Classical", "composer": "Ryan, William Bradbury", "instrumentation": "Flute"}


def _block(labels: dict[str, str]) -> str:
    return "".join(f"%{labels[k]}\n" for k in ("period", "composer", "instrumentation")) + "%end\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_eval")
    reels = music21_tunes("ryansMammoth", rhythm="reel", limit=30)
    jigs = [p for p in music21_tunes("ryansMammoth", rhythm="jig") if "6/8" in p.labels["meter"]][:30]
    for group, labels in ((reels, REEL), (jigs, JIG)):
        for i, piece in enumerate(group):
            piece.labels = dict(labels)
            piece.split = "eval" if i % 6 == 5 else "train"
    dataset = write_dataset(root / "reference", reels[:24] + jigs[:24])
    generated = root / "generated"
    generated.mkdir()
    (generated / "reel_new.abc").write_text(_block(REEL) + reels[25].text)
    (generated / "jig_new.abc").write_text(_block(JIG) + jigs[25].text)
    (generated / "copy.abc").write_text(_block(REEL) + reels[3].text)  # a verbatim training tune
    (generated / "from_manifest.abc").write_text(jigs[27].text)
    (generated / "interleaved.abc").write_text(
        _block(JIG) + "L:1/8\nM:6/8\nK:D\nV:1\nV:2\n[r:0/1][V:1]d2f a2f|[V:2]D,3 A,3|\n[r:1/0][V:1]g2e c2A|]"
        "[V:2]A,,3 A,3|]\n")
    (generated / "manifest.json").write_text(json.dumps({"pieces": [{"file": "from_manifest.abc", **JIG}]}))
    torch.manual_seed(0)
    encoder = save_encoder(M3Model(EncoderConfig.preset("tiny"), with_decoder=False), root / "encoder",
                           name="tiny-random")
    return dataset, generated, encoder, root


def test_prompts_and_normalisation(setup):
    _, generated, _, _ = setup
    assert Prompt.from_text(_block(REEL) + "L:1/8\n") == Prompt.of(REEL)
    assert Prompt.from_text("%%score 1\nL:1/8\n") is None
    pieces = {p.name: p for p in read_generated(generated)}
    assert pieces["from_manifest.abc"].labels == JIG
    assert "[r:" not in pieces["interleaved.abc"].text and "[r:" in pieces["interleaved.abc"].raw
    assert normalise_generated("[r:0/0][V:1]abc|\n") == "[V:1]abc|\n"


def test_generate_output_folders_are_read_once_per_piece(tmp_path):
    """`notagen generate` writes raw, interleaved and standard ABC per piece: only the raw file is a piece."""
    tune = _block(REEL) + "L:1/8\nM:2/4\nK:D\n[V:1]d2f2|a4|]\n"
    for name in ("piece-001-seed0", "piece-002-seed1"):
        folder = tmp_path / name
        folder.mkdir()
        for suffix in (".raw.abc", ".interleaved.abc", ".abc"):
            (folder / f"{name}{suffix}").write_text(tune)
    (tmp_path / ".piece-003-seed2.partial").mkdir()
    (tmp_path / ".piece-003-seed2.partial" / "piece-003-seed2.raw.abc").write_text(tune)  # an unfinished write
    pieces = read_generated(tmp_path)
    assert [p.name for p in pieces] == ["piece-001-seed0/piece-001-seed0.raw.abc",
                                        "piece-002-seed1/piece-002-seed1.raw.abc"]
    assert all(p.labels == REEL for p in pieces)


def test_eval_cli_writes_a_complete_report(setup):
    dataset, generated, encoder, root = setup
    out = root / "report"
    assert main(["eval", str(generated), "--reference", str(dataset), "--encoder", str(encoder),
                 "--out", str(out), "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_generated"] == 5 and report["n_reference"] == 40
    weights = report["encoder"]["weights"]
    assert report["encoder"]["encoder"] == "tiny-random" and len(weights) == 16
    assert report["acs"]["weights"] == weights and report["acs"]["n"] == 5 and report["acs"]["fallbacks"] == 0
    assert report["fmd"]["weights"] == weights and report["fmd"]["n_test"] == 5
    assert report["fmd"]["estimator"] == "oas"
    for label in ("period", "instrumentation"):
        entry = report["label_accuracy"][label]
        assert entry["n"] == 5 and entry["n_train"] == 40 and entry["n_reference_eval"] == 8
        per_prompt = entry["per_prompt"]  # every prompt's pieces, probed on their own
        prompted = sum(1 for p in report["per_piece"] if p.get("prompt"))
        assert prompted > 0 and sum(row["n"] for row in per_prompt.values()) == prompted
        assert all(0 <= row["la"] <= 1 for row in per_prompt.values())
    flagged = report["memorisation"]["flagged"]
    assert [f["name"] for f in flagged] == ["copy.abc"] and flagged[0]["bars"] >= 8
    assert report["validity"]["n"] == 5
    per_piece = {p["name"]: p for p in report["per_piece"]}
    assert per_piece["interleaved.abc"]["valid"] is True
    markdown = (out / "report.md").read_text()
    assert "tiny-random" in markdown and weights in markdown and "copy.abc" in markdown
    assert (out / "acs_per_prompt.png").stat().st_size > 1000 and (out / "memorisation_runs.png").is_file()
    # The reference features are cached under the encoder's hash and reused.
    assert len(list((out / "cache").glob(f"reference_{weights}_*.npy"))) == 1


def test_eval_without_encoder_still_reports_the_rest(setup, monkeypatch):
    dataset, generated, _, root = setup
    import notagen.encoder.loading as loading

    monkeypatch.setattr(loading, "DEFAULT_ENCODER_DIR", root / "nowhere")
    assert main(["eval", str(generated), "--reference", str(dataset), "--out", str(root / "plain"),
                 "--no-validity"]) == 0
    report = json.loads((root / "plain" / "report.json").read_text())
    assert "acs" not in report and "no shipped encoder" in report["encoder_skipped"]
    assert report["memorisation"]["n"] == 5
    assert main(["eval", str(generated), "--reference", str(dataset), "--encoder", str(root / "missing.pth")]) == 1


def test_eval_on_a_built_chorale_dataset_with_perplexity(tmp_path):
    """The real pipeline end to end: `notagen data build` on 8 Bach chorales, generated pieces in the model's raw
    output form (prompt lines, [r:] annotations, rest-reduced), one of them a training chorale in another key."""
    import shutil
    import warnings

    from music21 import corpus

    from notagen.checkpoint import save_checkpoint
    from notagen.config import ModelConfig
    from notagen.data.build import build_dataset
    from notagen.model import NotaGenModel
    from notagen.patchilizer import add_stream_annotations

    source = tmp_path / "scores"
    source.mkdir()
    for path in sorted(p for p in corpus.getComposer("bach") if str(p).endswith(".mxl") and "-" not in p.name)[:8]:
        shutil.copy(path, source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_dataset([source], out=tmp_path / "ds", workers=1, eval_fraction=0.25, progress=False)
    index = [json.loads(line) for line in (tmp_path / "ds" / "index.jsonl").read_text().splitlines()]
    train = next(r for r in index if r["split"] == "train")
    held = next(r for r in index if r["split"] == "eval")

    def raw_output(record: dict, key: str | None) -> str:
        keys = json.loads((tmp_path / "ds" / "pieces" / f"{record['id']}.json").read_text())["keys"]
        text = keys[key] if key else next(iter(keys.values()))
        lines = text.strip().split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith("[V:"))
        return "%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n" + "\n".join(
            lines[:start] + add_stream_annotations(lines[start:])) + "\n"

    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / "held.abc").write_text(raw_output(held, None))
    (generated / "copied.abc").write_text(raw_output(train, "Eb" if train["key"] != "Eb" else "D"))
    torch.manual_seed(0)
    model_dir = save_checkpoint(tmp_path / "model", NotaGenModel(ModelConfig.preset("tiny", patch_length=512)))
    encoder = save_encoder(M3Model(EncoderConfig.preset("tiny"), with_decoder=False), tmp_path / "encoder")
    assert main(["eval", str(generated), "--reference", str(tmp_path / "ds"), "--encoder", str(encoder),
                 "--model", str(model_dir), "--out", str(tmp_path / "report"), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    n_train = sum(r["split"] == "train" for r in index)  # the split is per group of works: its size varies
    assert n_train >= 2 and report["n_reference"] == n_train and report["memorisation"]["indexed_pieces"] == n_train
    flagged = report["memorisation"]["flagged"]
    assert [f["name"] for f in flagged] == ["copied.abc"] and flagged[0]["piece"] == train["id"]
    assert flagged[0]["bars"] >= 8
    by_prompt = report["memorisation"]["per_prompt"]["Baroque | Bach, Johann Sebastian | Choral"]
    assert by_prompt["n"] == 2 and by_prompt["flagged_share"] == 0.5
    held_out = [r for r in index if r["split"] == "eval"
                and (r.get("labels") or {}).get("composer") == "Bach, Johann Sebastian"]
    assert by_prompt["real_n"] == len(held_out)
    assert (by_prompt["real_flagged_share"] is None) == (not held_out)
    assert report["perplexity"]["n"] == len(index) - n_train and 1.0 < report["perplexity"]["perplexity"] < 200
    assert report["acs"]["n"] == 2 and report["label_accuracy"]["period"]["skipped"]
