"""Input discovery: files, folders, multi-tune ABC, bad inputs, and the music21 corpus policy."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter

from score_fixtures import PIANO, STRINGS, VOICE, Movement, Score, musicxml, tune

from notagen.data.sources import (
    MAX_PIECE_ID,
    MUSIC21_REPOSITORY,
    dedupe_ids,
    default_work,
    discover_inputs,
    discover_music21_corpus,
    make_piece_id,
    music21_corpus_dir,
    public_url,
    split_abc_tunes,
)
from notagen.limits import DEFAULT_LIMITS

CORPUS = music21_corpus_dir()


def test_split_abc_tunes_keeps_header_and_every_tune():
    text = "% a comment\n%%directive\n\nX: 1\nT:A\nK:C\nCDEF|\n\n\nX:2\nT:B\nK:G\nGABc|\n"
    header, tunes = split_abc_tunes(text)
    assert header.startswith("% a comment")
    assert [t.splitlines()[1] for t in tunes] == ["T:A", "T:B"]
    assert tunes[0].endswith("CDEF|\n")


def test_multi_tune_abc_gives_one_job_per_tune(tmp_path):
    folder = tmp_path / "folk"
    folder.mkdir()
    shutil.copy(CORPUS / "miscFolk" / "americanfifeopus.abc", folder / "fife.abc")
    found = discover_inputs([folder])
    assert len(found.jobs) == 56 and not found.skips
    third = found.jobs[2]
    assert third.source.endswith("fife.abc#3") and third.tune == 3 and third.piece_id == "fife-0003"
    assert third.text.lstrip().startswith("X:") and third.collection == "folk"
    assert len({j.hash for j in found.jobs}) == 56


def test_bad_inputs_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "empty.xml").write_bytes(b"")
    (tmp_path / "binary.abc").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "notxml.xml").write_text("this is not xml at all\n")
    (tmp_path / "html.xml").write_text("<html><body>hi</body></html>\n")
    (tmp_path / "corrupt.mxl").write_bytes(b"PK\x03\x04 definitely not a zip file")
    (tmp_path / "truncated.mxl").write_bytes((CORPUS / "bach" / "bwv66.6.mxl").read_bytes()[:300])
    (tmp_path / "notes.txt").write_text("ignored inside folders")
    huge = tmp_path / "huge.abc"
    with huge.open("wb") as handle:
        handle.truncate(DEFAULT_LIMITS.max_input_bytes + 1)
    found = discover_inputs([tmp_path, tmp_path / "missing.xml", tmp_path / "notes.txt"])
    reasons = {s.source.rsplit("/", 1)[-1]: s.reason for s in found.skips if not s.policy}
    assert reasons["empty.xml"] == "empty file"
    assert reasons["binary.abc"].startswith("binary file")
    assert reasons["notxml.xml"].startswith("not XML")
    assert reasons["html.xml"].startswith("not a score")
    assert reasons["corrupt.mxl"].startswith("corrupt .mxl")
    assert reasons["truncated.mxl"].startswith("corrupt .mxl")
    assert reasons["huge.abc"].startswith("too large")
    assert reasons["missing.xml"] == "no such file or folder"
    assert reasons["notes.txt"].startswith("unsupported file type")
    assert not found.jobs
    # Inside a folder, other file types are reported too, as excluded (a folder may hold anything).
    assert [(s.source.rsplit("/", 1)[-1], s.policy) for s in found.skips if s.policy] == [("notes.txt", True)]
    assert "huge.abc" in reasons and "--max-input-mb" in reasons["huge.abc"]


def test_valid_mxl_and_utf16_xml_pass_preflight(tmp_path):
    shutil.copy(CORPUS / "bach" / "bwv66.6.mxl", tmp_path / "a.mxl")
    utf16 = next(p for p in sorted((CORPUS / "trecento").glob("*.xml")) if p.read_bytes()[:2] == b"\xff\xfe")
    shutil.copy(utf16, tmp_path / "b.xml")
    found = discover_inputs([tmp_path])
    assert [j.format for j in found.jobs] == ["mxl", "musicxml"] and not found.skips
    with zipfile.ZipFile(tmp_path / "a.mxl") as archive:
        assert archive.testzip() is None


def test_piece_ids_are_safe_and_unique():
    assert make_piece_id("bach/bwv66.6.mxl") == "bach-bwv66.6"
    assert make_piece_id("my folder/a tune.abc", 7) == "my_folder-a_tune-0007"
    assert make_piece_id("Lieder/Holmès,_Augusta/_/Noël_(1890)/lc1.mxl", movement=2) == \
        "Lieder-Holmes_Augusta-Noel_1890-lc1-m02"
    long = make_piece_id("x/" + "very_long_title_" * 20 + "/lc1.mxl")
    assert len(long) <= MAX_PIECE_ID and long != make_piece_id("x/" + "very_long_title_" * 20 + "/lc2.mxl")
    found = discover_inputs([CORPUS / "schumann_robert" / "dichterliebe_no2.xml"])
    job = found.jobs[0]
    twins = dedupe_ids([job, job.__class__(**{**job.__dict__, "hash": "0123456789abcdef"})])
    assert twins[0].piece_id == "dichterliebe_no2" and twins[1].piece_id == "dichterliebe_no2_01234567"


def test_music21_corpus_policy():
    found = discover_music21_corpus()
    per_collection = Counter(j.collection for j in found.jobs)
    assert per_collection["bach"] == 410 and per_collection["palestrina"] == 1318
    assert per_collection["josquin"] == 8 and all(j.merge_tunes for j in found.jobs if j.collection == "josquin")
    assert per_collection["oneills1850"] == 2009 and per_collection["ryansMammoth"] == 1059
    assert "essenFolksong" not in per_collection and "demos" not in per_collection
    assert "leadSheet" not in per_collection and "nottingham-dataset" not in per_collection
    sources = {j.source for j in found.jobs}
    assert "music21/corpus/bach/bwv277.mxl" in sources and "music21/corpus/bach/bwv277.krn" not in sources
    assert not any(s.endswith(".rntxt") for s in sources)
    assert sum("opus18no1" in s and s.endswith(".krn") for s in sources) == 0
    skipped = {s.source: s for s in found.skips}
    assert skipped["music21/corpus/bach/bwv277.krn"].policy
    assert "duplicate encoding" in skipped["music21/corpus/schumann_robert/dichterliebe_no2.xml"].reason
    assert all(s.policy for s in found.skips)  # nothing in the shipped corpus is unreadable
    assert "non-commercial" in skipped["music21/corpus/essenFolksong/han1.abc"].reason
    palestrina = next(j for j in found.jobs if j.collection == "palestrina")
    assert "John Miller" in palestrina.licence
    # Provenance: the music21 repository at the installed release's tag, the file's path in it.
    chorale = next(j for j in found.jobs if j.source == "music21/corpus/bach/bwv66.6.mxl")
    assert chorale.repository == MUSIC21_REPOSITORY and chorale.repo_path == "music21/corpus/bach/bwv66.6.mxl"
    assert chorale.commit and chorale.commit.startswith("v") and chorale.work == "music21/bach/bwv66.6.mxl"
    # Works: the movements of a quartet stored one per file, the sections of one mass (its !!!OPR: record).
    works = {j.source.removeprefix("music21/corpus/"): j.work for j in found.jobs}
    assert works["beethoven/opus18no1/movement1.mxl"] == works["beethoven/opus18no1/movement4.mxl"] == \
        "music21/beethoven/opus18no1"
    assert works["palestrina/Credo_10_a.krn"] == works["palestrina/Credo_10_b.krn"] == works[
        "palestrina/Agnus_01.krn"] == "music21/palestrina/Missa De Beata Marie Virginis (III)"
    assert works["palestrina/Kyrie_03_a.krn"] != works["palestrina/Agnus_01.krn"]
    folk = [j for j in found.jobs if j.source.startswith("music21/corpus/oneills1850/0001-0050.abc#")]
    assert len({j.work for j in folk}) == len(folk) > 1  # every tune of a tune book is its own work


def test_music21_corpus_with_essen():
    found = discover_music21_corpus(include_essen=True)
    essen = [j for j in found.jobs if j.collection == "essenFolksong"]
    assert len(essen) > 8000 and "non-commercial" in essen[0].licence


def test_a_multi_movement_file_in_a_plain_folder_gives_one_job_per_movement(tmp_path):
    score = Score(STRINGS, [Movement(tune(1), heading="I."), Movement(tune(2), heading="II."),
                            Movement(tune(3), heading="III.")])
    (tmp_path / "quartet.xml").write_text(musicxml(score), encoding="utf-8")
    (tmp_path / "song.xml").write_text(musicxml(Score((VOICE, PIANO), [Movement(tune(4))])), encoding="utf-8")
    found = discover_inputs([tmp_path])
    jobs = {j.source.rsplit("/", 1)[-1]: j for j in found.jobs}
    assert sorted(jobs) == ["quartet.xml#m1", "quartet.xml#m2", "quartet.xml#m3", "song.xml"]
    assert jobs["quartet.xml#m3"].measures == (12, 18) and jobs["quartet.xml#m3"].piece_id == "quartet-m03"
    assert len({j.work for j in found.jobs}) == 2 and len({j.hash for j in found.jobs}) == 4
    assert all(j.repository is None and j.labels is None for j in found.jobs)


def test_default_work_and_public_urls():
    assert default_work("scores", "opus18no1/movement2.mxl") == "scores/opus18no1"
    assert default_work("scores", "opus18no1/Movement_3.xml") == "scores/opus18no1"
    assert default_work("scores", "movement2.mxl") == "scores/movement2.mxl"   # no folder: the file is the work
    assert default_work("scores", "songs/lied.mxl") == "scores/songs/lied.mxl"
    assert public_url("git@github.com:OpenScore/Lieder.git") == "https://github.com/OpenScore/Lieder"
    assert public_url("https://github.com/OpenScore/Lieder.git") == "https://github.com/OpenScore/Lieder"
    assert public_url("/work/.mirror/OpenScore+Lieder/repo") is None and public_url(None) is None
