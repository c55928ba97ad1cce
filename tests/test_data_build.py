"""`notagen data build` on a few real corpus pieces plus bad inputs: outputs, reasons, exit codes, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notagen import cli
from notagen.abc.text import bar_count
from notagen.abc.transpose import KEYS
from notagen.convert import abc_to_musicxml
from notagen.data.build import build_dataset, split_of
from notagen.data.dataset import ScoreDataset, original_key_name
from notagen.data.sources import music21_corpus_dir
from notagen.events import musicxml_events
from notagen.io import file_hash
from tests.musicxml_helpers import attributes, backup, melody, note, part, score

CORPUS = music21_corpus_dir()
CHORALE = CORPUS / "bach" / "bwv66.6.mxl"
QUARTET = CORPUS / "mozart" / "k80" / "movement3.mxl"
FOLK = CORPUS / "ryansMammoth" / "BanishMisfortune.abc"  # jig: pickup and two repeated strains


def _make_inputs(root: Path) -> list[str]:
    scores = root / "scores"
    for folder in ("chorale", "quartet", "folk", "bad", "zz_copies"):
        (scores / folder).mkdir(parents=True)
    shutil.copy(CHORALE, scores / "chorale" / "bwv66.6.mxl")
    shutil.copy(QUARTET, scores / "quartet" / "k80_mvt3.mxl")
    shutil.copy(FOLK, scores / "folk" / "banish.abc")
    bad = scores / "bad"
    (bad / "corrupt.mxl").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (bad / "notxml.xml").write_text("Dear diary, today I wrote no XML.\n")
    (bad / "empty.abc").write_text("")
    (bad / "binary.krn").write_bytes(bytes(range(256)) * 8)
    shutil.copy(CHORALE, scores / "zz_copies" / "copy_of_chorale.mxl")  # sorts after the original
    labels = root / "labels.yaml"
    labels.write_text("- pattern: 'chorale/*'\n  period: Baroque\n  composer: 'Bach, Johann Sebastian'\n"
                      "  instrumentation: Choral\n")
    return [str(scores), str(root / "missing_folder")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    inputs = _make_inputs(root)
    messages: list[str] = []
    summary = build_dataset(inputs, root / "dataset", labels=root / "labels.yaml", workers=1, progress=False,
                            log=messages.append)
    return root, inputs, summary, messages


def _index(dataset: Path) -> list[dict]:
    return [json.loads(line) for line in (dataset / "index.jsonl").read_text().splitlines()]


def test_dataset_folder_layout_and_index(built):
    root, _, summary, _ = built
    dataset = root / "dataset"
    for name in ("manifest.json", "index.jsonl", "report.json", "report.md"):
        assert (dataset / name).is_file(), name
    records = {r["id"]: r for r in _index(dataset)}
    assert set(records) == {"chorale-bwv66.6", "quartet-k80_mvt3", "folk-banish"}, records.keys()
    assert summary.built == 3
    chorale = records["chorale-bwv66.6"]
    assert chorale["source"].endswith("chorale/bwv66.6.mxl") and chorale["collection"] == "scores"
    assert chorale["labels"] == {"period": "Baroque", "composer": "Bach, Johann Sebastian",
                                 "instrumentation": "Choral"}
    assert chorale["key"] == "F#min" and chorale["voices"] == 4 and chorale["bars"] == 10
    assert chorale["hash"] == file_hash(CHORALE) and chorale["verified"] is True
    assert records["quartet-k80_mvt3"]["voices"] == 4 and records["quartet-k80_mvt3"]["labels"] is None
    assert records["folk-banish"]["voices"] == 1 and records["folk-banish"]["key"] == "D"
    # Hash split per group (here each piece is its own work and group); a tiny build whose hashes all say "train"
    # still gets one eval group.
    assert {r["group"] for r in records.values()} == {"scores/chorale/bwv66.6.mxl", "scores/quartet/k80_mvt3.mxl",
                                                      "scores/folk/banish.abc"}
    assert all(r["split"] == "eval" for r in records.values() if split_of(r["group"], 0, 0.1) == "eval")
    assert sum(r["split"] == "eval" for r in records.values()) >= 1
    for record in records.values():
        assert set(record) >= {"id", "source", "collection", "licence", "labels", "key", "bars", "voices",
                               "chars", "split", "hash", "repository", "commit", "path", "work", "group", "movement"}
        # A folder outside any git work tree: no repository to name, the path is the file's.
        assert record["repository"] is None and record["commit"] is None and record["path"] == record["source"]
        piece = json.loads((dataset / "pieces" / f"{record['id']}.json").read_text())
        assert record["chars"] == len(piece["interleaved"])
        assert sorted(piece["keys"]) == sorted(KEYS)
        for text in piece["keys"].values():
            assert "%end" not in text and "[r:" not in text and not re.match(r"%(?!%)", text)
            assert all(ord(c) < 128 for c in text)
        # The original key's text is the same music as the untransposed interleaving (spelling may differ).
        original_text = piece["keys"][original_key_name(record)]
        assert bar_count(original_text) == record["bars"]
        if record["id"] == "chorale-bwv66.6":
            assert musicxml_events(abc_to_musicxml(original_text)) == musicxml_events(
                abc_to_musicxml(piece["interleaved"]))
    folk = json.loads((dataset / "pieces" / "folk-banish.json").read_text())
    assert ":|" in folk["interleaved"] and folk["interleaved"].count("[V:1]") == records["folk-banish"]["bars"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["counts"]["built"] == 3 and manifest["keys"] == list(KEYS)


def test_every_bad_input_is_reported_with_its_reason(built):
    root, _, _, messages = built
    report = json.loads((root / "dataset" / "report.json").read_text())
    reasons = {f["source"].rsplit("/", 1)[-1]: f["reason"] for f in report["failures"]}
    assert reasons["corrupt.mxl"].startswith("corrupt .mxl")
    assert reasons["notxml.xml"].startswith("not XML")
    assert reasons["empty.abc"] == "empty file"
    assert reasons["binary.krn"].startswith("binary file")
    assert reasons["missing_folder"] == "no such file or folder"
    assert reasons["copy_of_chorale.mxl"].startswith("duplicate of ") and "chorale/bwv66.6.mxl" in reasons[
        "copy_of_chorale.mxl"]
    assert report["totals"] == {**report["totals"], "built": 3, "failed": 5, "duplicate": 1}
    # One printed line per problem, naming the file.
    for name in ("corrupt.mxl", "notxml.xml", "empty.abc", "binary.krn", "missing_folder"):
        assert sum(name in m for m in messages) == 1, name
    markdown = (root / "dataset" / "report.md").read_text()
    assert "corrupt.mxl" in markdown and "| scores |" in markdown


def test_prompt_block_for_a_labelled_piece(built):
    root, _, _, _ = built
    data = ScoreDataset(root / "dataset", split="all")
    i = next(i for i, r in enumerate(data.records) if r["id"] == "chorale-bwv66.6")
    text = data.text(i, key="C", prompt=True)
    assert text.startswith("%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n")
    assert text.endswith(data.text(i, key="C")) and "K:" in data.text(i, key="C")
    assert ScoreDataset(root / "dataset", split="all", labelled_only=True).records[0]["id"] == "chorale-bwv66.6"


def test_cli_exit_codes(built, tmp_path, capsys):
    root, inputs, _, _ = built
    dataset = tmp_path / "dataset"
    shutil.copytree(root / "dataset", dataset)
    base = ["data", "build", *inputs, "--out", str(dataset), "--labels", str(root / "labels.yaml"),
            "--workers", "1", "--no-progress"]
    assert cli.main(base) == 0  # failures alone do not fail the build
    assert "0 converted now" in capsys.readouterr().out  # everything resumed from the journal
    assert cli.main([*base, "--strict"]) == 1
    bad_only = ["data", "build", str(Path(inputs[0]) / "bad"), "--out", str(tmp_path / "nothing"),
                "--workers", "1", "--no-progress"]
    assert cli.main(bad_only) == 1
    assert "nothing could be built" in capsys.readouterr().err


def test_resume_rebuilds_only_missing_or_damaged_pieces(built, tmp_path):
    root, inputs, _, _ = built
    dataset = tmp_path / "dataset"
    shutil.copytree(root / "dataset", dataset)
    reference_index = (dataset / "index.jsonl").read_text()
    pieces = dataset / "pieces"
    (pieces / "folk-banish.json").unlink()
    (pieces / "chorale-bwv66.6.json").write_text('{"standard": "trunc')  # damaged: size differs from the journal's
    (pieces / ".quartet-k80_mvt3.json.abc123.tmp").write_text("left by a kill")
    untouched = (pieces / "quartet-k80_mvt3.json").stat().st_mtime_ns
    summary = build_dataset(inputs, dataset, labels=root / "labels.yaml", workers=1, progress=False,
                            log=lambda m: None)
    assert summary.converted_now == 2
    assert (dataset / "index.jsonl").read_text() == reference_index
    assert (pieces / "quartet-k80_mvt3.json").stat().st_mtime_ns == untouched
    assert json.loads((pieces / "chorale-bwv66.6.json").read_text())["keys"]
    assert not list(pieces.glob(".*.tmp"))


def test_killed_build_resumes_to_the_same_index(built, tmp_path):
    root, inputs, _, _ = built
    dataset = tmp_path / "dataset"
    script = ("import sys; from notagen.data.build import build_dataset; "
              f"build_dataset({inputs!r}, {str(dataset)!r}, labels={str(root / 'labels.yaml')!r}, workers=1, "
              "progress=False, log=lambda m: None)")
    process = subprocess.Popen([sys.executable, "-c", script])
    journal = dataset / ".build" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (dataset / "index.jsonl").exists(), "the build finished before it could be killed"
    done_before = journal.read_text().count("\n")
    summary = build_dataset(inputs, dataset, labels=root / "labels.yaml", workers=1, progress=False,
                            log=lambda m: None)
    assert summary.converted_now == 3 - done_before
    assert (dataset / "index.jsonl").read_text() == (root / "dataset" / "index.jsonl").read_text()


def test_parallel_build_gives_the_same_index(built, tmp_path):
    root, inputs, _, _ = built
    summary = build_dataset(inputs, tmp_path / "dataset", labels=root / "labels.yaml", workers=2,
                            progress=False, log=lambda m: None)
    assert summary.built == 3
    assert (tmp_path / "dataset" / "index.jsonl").read_text() == (root / "dataset" / "index.jsonl").read_text()


def test_split_is_per_group_seeded_and_stable():
    ids = [f"group-{i}" for i in range(2000)]
    splits = {i: split_of(i, 0, 0.1) for i in ids}
    assert 150 < sum(s == "eval" for s in splits.values()) < 250
    assert splits == {i: split_of(i, 0, 0.1) for i in reversed(ids)}  # order-free: adding pieces moves nothing
    assert splits != {i: split_of(i, 1, 0.1) for i in ids}
    assert all(split_of(i, 0, 0.0) == "train" for i in ids)


def test_too_long_and_timeout_are_reported(tmp_path):
    folk = tmp_path / "folk"
    folk.mkdir()
    shutil.copy(FOLK, folk / "banish.abc")
    shutil.copy(CHORALE, folk / "chorale.mxl")
    messages: list[str] = []
    summary = build_dataset([folk], tmp_path / "short", max_chars=40, workers=1, progress=False,
                            log=messages.append)
    assert summary.built == 0 and summary.failed == 2
    assert all("too long" in m and "--max-chars 40" in m for m in messages)
    summary = build_dataset([folk / "chorale.mxl"], tmp_path / "slow", timeout=0.001, workers=1, progress=False,
                            log=messages.append)
    assert summary.built == 0 and messages[-1].endswith("timeout after 0.001 s")


def _cross_voice_tie() -> str:
    """Voice 1's G4 tied into voice 2: one sound that ABC (ties stay in their voice) cannot write."""
    bar1 = [attributes(), note("G4", 4, 1, tie="start")] + melody("A4 B4 C5") + \
        [backup(12), note("G4", 2, 2, tie="stop"), note("F4", 2, 2), note("E4", 8, 2)]
    return score(part([bar1, melody("D5 E5 F5 G5")]))


def test_lossy_round_trip_is_excluded_or_kept_flagged(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tie.musicxml").write_text(_cross_voice_tie())
    messages: list[str] = []
    summary = build_dataset([folder], tmp_path / "strict", workers=1, progress=False, log=messages.append)
    assert summary.built == 0 and summary.failed == 1
    assert messages[0].endswith("tie.musicxml: the conversion changes the music: 1 of 10 notes not kept and 2 not in "
                                "the source in 1 bar; first in bar 1 of part 1 (P1), voice 1 (V:1): G4 at beat 1 "
                                "lasts a quarter instead of a dotted quarter; an extra G4 (an eighth) at beat 2; the "
                                "bar has a tie across voices"), messages
    # Failures are remembered: a re-run converts nothing unless asked to retry them.
    assert build_dataset([folder], tmp_path / "strict", workers=1, progress=False,
                         log=messages.append).converted_now == 0
    assert build_dataset([folder], tmp_path / "strict", workers=1, progress=False, retry_failed=True,
                         log=messages.append).converted_now == 1
    summary = build_dataset([folder], tmp_path / "kept", workers=1, progress=False, keep_unverified=True,
                            log=messages.append)
    (record,) = _index(tmp_path / "kept")
    assert summary.built == 1 and record["verified"] is False
    assert record["verification"].startswith("the conversion changes the music")


def _feature_scores() -> dict[str, str]:
    """Small scores whose notation the converters used to damage (see tests/test_vree.py, tests/test_musicxml.py)."""
    grace_end = [note("E5", 12), note("E5", 4), note("G5", None, grace=True), note("A5", None, grace=True)]
    tuplets = [attributes(divisions=30, time="2/4"), note("B4", 10, tuplet=(3, 2), notations='<tuplet type="start"/>')]
    tuplets += [note("B4", 2, tuplet=(15, 4), notations='<tuplet type="start"/>' if i == 0 else
                     ('<tuplet type="stop"/>' if i == 4 else "")) for i in range(5)]
    tuplets += [note("B4", 10, tuplet=(3, 2), notations='<tuplet type="stop"/>'), note("C5", 30)]
    piano = [attributes(fifths=None, staves=2, extra='<key number="1"><fifths>0</fifths></key>'),
             note("F4", 16, 1, staff=1), backup(16),
             '<attributes><key number="2"><fifths>2</fifths></key><clef number="2"><sign>F</sign><line>4</line>'
             "</clef></attributes>", note("F#2", 16, 2, staff=2)]
    return {
        "aeolian.musicxml": score(part([[attributes(fifths=2, mode="aeolian")] + melody("G4 F#4 C#5 B4"),
                                        melody("A4 G4 F#4 E4")])),
        "additive.musicxml": score(part([[attributes(time="3+2/8")] + [note("C5", 2)] * 5] * 2)),
        "graces.musicxml": score(part([[attributes()] + grace_end, melody("D5 C5 B4 C5") + grace_end[2:]])),
        "tuplets.musicxml": score(part([tuplets, melody("D5 E5", divisions=30)])),
        "piano.musicxml": score(part([piano, [note("F4", 16, 1, staff=1), backup(16), note("C3", 16, 2, staff=2)]])),
        "hidden.musicxml": score(part([[attributes()] + melody("C5 D5") + [note("E5", 8, attrs='print-object="no"')],
                                       melody("F5 G5 A5 B5")])),
    }


def test_every_piece_of_a_small_built_dataset_verifies(tmp_path):
    """Each built piece's interleaved text reads back as its source, and each of its 15 training texts as the
    source moved by that key's interval (pitch, onset and duration of every note)."""
    from notagen.abc.transpose import transposition_interval
    from notagen.convert import score_to_musicxml, verify_abc
    from notagen.events import compare_events, shift_pitches

    folder = tmp_path / "in"
    folder.mkdir()
    for name, xml in _feature_scores().items():
        (folder / name).write_text(xml)
    shutil.copy(CHORALE, folder / "chorale.mxl")
    summary = build_dataset([folder], tmp_path / "dataset", workers=1, progress=False)
    assert summary.built == 7 and summary.failed == 0
    for record in _index(tmp_path / "dataset"):
        piece = json.loads((tmp_path / "dataset" / "pieces" / f"{record['id']}.json").read_text())
        source = score_to_musicxml(record["source"])
        assert record["verified"] and verify_abc(source, piece["interleaved"]).exact, record["id"]
        events = musicxml_events(source)
        for key, text in piece["keys"].items():
            moved = shift_pitches(events, transposition_interval(record["key"], key))
            assert compare_events(moved, musicxml_events(abc_to_musicxml(text)), durations=True).exact, \
                (record["id"], key)


def crash_on_purpose(job, options):
    """Stand-in worker (module level, so spawned workers can import it): dies on jobs named crash*."""
    if job.piece_id.startswith("crash"):
        os._exit(3)
    return {"id": job.piece_id, "source": job.source, "status": "ok", "seconds": 0.0}


def test_a_dying_worker_costs_only_its_piece():
    from notagen.data.build import BuildOptions, _run_pool
    from notagen.data.sources import Job

    jobs = [Job(f"{name}.xml", f"/nowhere/{name}.xml", f"{name}.xml", "c", "l", "musicxml", name, name)
            for name in ("good1", "crash", "good2", "good3")]
    results = {r["id"]: r for r in _run_pool(jobs, BuildOptions(), workers=2, worker=crash_on_purpose)}
    assert set(results) == {"good1", "crash", "good2", "good3"}
    assert results["crash"]["status"] == "failed" and results["crash"]["kind"] == "worker crash"
    assert all(results[name]["status"] == "ok" for name in ("good1", "good2", "good3"))


def test_josquin_voice_tunes_are_merged_into_one_piece(tmp_path):
    from notagen.data.build import BuildOptions, build_piece
    from notagen.data.sources import discover_music21_corpus

    (tmp_path / "josquin").mkdir()
    for name in ("4vPerIlludAveProlatum.abc", "petiteCamusette.abc"):
        shutil.copy(CORPUS / "josquin" / name, tmp_path / "josquin" / name)
    jobs = {j.rel: j for j in discover_music21_corpus(corpus_dir=tmp_path).jobs}
    assert len(jobs) == 2 and all(j.merge_tunes and j.tune is None for j in jobs.values())
    merged = build_piece(jobs["josquin/4vPerIlludAveProlatum.abc"], BuildOptions())
    assert merged["status"] == "ok", merged.get("reason")
    assert merged["record"]["voices"] == 2 and merged["record"]["bars"] == 51
    # One voice of this chanson is two bars shorter than the others: excluded, with the reason.
    uneven = build_piece(jobs["josquin/petiteCamusette.abc"], BuildOptions())
    assert uneven["status"] == "failed" and uneven["reason"] == "unequal bar counts across voices"


def test_relabelling_and_resplitting_need_no_conversion(built, tmp_path):
    root, inputs, _, _ = built
    dataset = tmp_path / "dataset"
    shutil.copytree(root / "dataset", dataset)
    labels = tmp_path / "labels.csv"
    labels.write_text("pattern,period,composer,instrumentation\nfolk/*,Folk,\"Anonymous, Trad\",Fiddle\n")
    summary = build_dataset(inputs, dataset, labels=labels, seed=5, eval_fraction=0.5, workers=1,
                            progress=False, log=lambda m: None)
    assert summary.converted_now == 0
    records = {r["id"]: r for r in _index(dataset)}
    assert records["folk-banish"]["labels"] == {"period": "Folk", "composer": "Anonymous, Trad",
                                                "instrumentation": "Fiddle"}
    assert records["chorale-bwv66.6"]["labels"] is None
    assert all(r["split"] == split_of(r["group"], 5, 0.5) for r in records.values())


def test_same_music_under_another_title_is_a_duplicate(tmp_path):
    folder = tmp_path / "tunes"
    folder.mkdir()
    text = FOLK.read_text()
    (folder / "a.abc").write_text(text)
    (folder / "b.abc").write_text(text.replace("T:Banish Misfortune", "T:Banish Misfortune (another copy)"))
    summary = build_dataset([folder], tmp_path / "dataset", workers=1, progress=False, log=lambda m: None)
    assert summary.built == 1 and [r["id"] for r in _index(tmp_path / "dataset")] == ["a"]
    report = json.loads((tmp_path / "dataset" / "report.json").read_text())
    (duplicate,) = report["failures"]
    assert duplicate["source"].endswith("b.abc") and duplicate["kind"] == "duplicate"
    assert duplicate["reason"] == f"duplicate of {folder / 'a.abc'} (same interleaved text)"
    assert not (tmp_path / "dataset" / "pieces" / "b.json").exists()
