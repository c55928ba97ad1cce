"""Repository collections in the OpenScore layout: discovery, labels, movements, provenance, grouped split, report.

The collections are small folders the tests write in the layout of OpenScore Lieder and OpenScore String Quartets
(`score_fixtures.py`); the build converts their 13 tiny pieces once, and the split is then re-derived from its
journal for several seeds without converting anything again.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from score_fixtures import git_commit, write_lieder, write_quartets

from notagen.data.build import build_dataset
from notagen.data.repositories import composer_years, identify, is_repository
from notagen.data.sources import discover_inputs

LIEDER_REPOSITORY = "https://github.com/OpenScore/Lieder"
QUARTETS_REPOSITORY = "https://github.com/OpenScore/StringQuartets"


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    root = tmp_path_factory.mktemp("collections")
    lieder, quartets = write_lieder(root / "Lieder"), write_quartets(root / "StringQuartets")
    commits = {"lieder": git_commit(lieder), "quartets": git_commit(quartets)}
    return root, lieder, quartets, commits


@pytest.fixture(scope="module")
def built(collections):
    root, lieder, quartets, commits = collections
    messages: list[str] = []
    summary = build_dataset([lieder, quartets], root / "dataset", workers=1, progress=False, log=messages.append,
                            eval_fraction=0.5)
    return root, summary, messages


def _records(dataset):
    return [json.loads(line) for line in (dataset / "index.jsonl").read_text(encoding="utf-8").splitlines()]


def _by_name(records):
    return {r["path"].rsplit("/", 1)[-1] + (f"#m{r['movement']}" if r["movement"] else ""): r for r in records}


def test_collections_are_recognised_with_their_metadata(collections):
    _, lieder, quartets, _ = collections
    assert is_repository(lieder) and is_repository(quartets) and not is_repository(lieder / "scores")
    assert identify(lieder).repository == LIEDER_REPOSITORY and identify(lieder).licence.startswith("CC0-1.0")
    assert identify(quartets).name == "OpenScore-StringQuartets"
    years = composer_years(lieder)
    assert years["Schubert,_Franz"] == (1797, 1828)
    assert years["Arne,_Thomas"] == (1710, 1778)      # not in the TSV: from the composer's README
    assert "Mystery,_Anne" not in years


def test_discovery_labels_splits_movements_and_records_provenance(collections):
    _, lieder, quartets, commits = collections
    found = discover_inputs([lieder, quartets])
    jobs = {job.source.split("/", 1)[1]: job for job in found.jobs}
    prefix = "scores/Schubert,_Franz/Winterreise,_D.911/"
    gute_nacht = jobs[prefix + "01_Gute_Nacht/lc1.mxl"]
    assert gute_nacht.labels == ("Romantic", "Schubert, Franz", "Art Song")
    assert gute_nacht.collection == "OpenScore-Lieder" and gute_nacht.licence.startswith("CC0-1.0")
    assert gute_nacht.repository == LIEDER_REPOSITORY and gute_nacht.repo_path == prefix + "01_Gute_Nacht/lc1.mxl"
    if commits["lieder"]:
        assert gute_nacht.commit == commits["lieder"]
    # Each song is a work, in a set or not; the movements of a quartet are one (below).
    assert gute_nacht.work == "OpenScore-Lieder/Schubert,_Franz/Winterreise,_D.911/01_Gute_Nacht"
    assert jobs[prefix + "05_Der_Lindenbaum/lc2.mxl"].work.endswith("/05_Der_Lindenbaum")
    assert jobs["scores/Schubert,_Franz/_/Standalone_Song/lc3.mxl"].work.endswith("/_/Standalone_Song")
    # Four voices alone: Choral; the composer's period from the TSV (1779: Classical, as NotaGen has her).
    assert jobs["scores/Reichardt,_Louise/_/Hymn/lc4.mxl"].labels == ("Classical", "Reichardt, Louise", "Choral")
    # Two songs in one file: one piece each, the same work; dates from the README.
    arne = [jobs[f"scores/Arne,_Thomas/_/Two_Airs/lc5.mxl#m{n}"] for n in (1, 2)]
    assert [a.movement for a in arne] == [1, 2] and arne[0].work == arne[1].work
    assert arne[0].labels == ("Classical", "Arne, Thomas", "Art Song") and arne[0].piece_id.endswith("-m01")
    assert arne[0].hash != arne[1].hash
    # A numbering restart inside a song is no movement.
    assert "scores/Lang,_Josephine/_/A_Song_In_Two_Sections/lc6.mxl" in jobs
    unknown = jobs["scores/Mystery,_Anne/_/Unknown/lc7.mxl"]
    assert unknown.labels is None and unknown.label_note == "no dates for composer 'Mystery,_Anne'"
    haydn = [jobs[f"scores/Haydn,_Joseph/String_Quartet_Op.1_No.1/sq10.mxl#m{n}"] for n in (1, 2, 3)]
    assert [h.measures for h in haydn] == [(0, 6), (6, 12), (12, 18)]
    assert {h.labels for h in haydn} == {("Classical", "Haydn, Joseph", "Chamber")}
    assert haydn[1].title == "String Quartet Op.1 No.1: II. Menuetto"
    assert haydn[0].repository == QUARTETS_REPOSITORY
    mayer = [jobs[f"scores/Mayer,_Emilie/String_Quartet_Op.14/sq{n}.mxl"] for n in (20, 21)]
    assert mayer[0].work == mayer[1].work and mayer[0].labels[0] == "Romantic"
    assert len(found.jobs) == 13
    [skip] = found.skips
    assert skip.source.endswith("Only_MuseScore") and "no MusicXML export" in skip.reason


def test_build_index_carries_provenance_work_and_group(built, collections):
    root, summary, _ = built
    _, _, _, commits = collections
    records = _by_name(_records(root / "dataset"))
    assert summary.built == 13, records.keys()
    for record in records.values():
        assert record["verified"] is True
        assert record["repository"] in (LIEDER_REPOSITORY, QUARTETS_REPOSITORY)
        assert record["path"].startswith("scores/") and record["licence"].startswith("CC0-1.0")
        assert record["work"] and record["group"]
        if commits["lieder"]:
            assert record["commit"] in commits.values()
    assert records["sq10.mxl#m2"]["bars"] == 6 and records["sq10.mxl#m2"]["voices"] == 4
    assert records["lc6.mxl"]["bars"] == 12
    assert records["lc7.mxl"]["labels"] is None and "no dates" in records["lc7.mxl"]["label_note"]
    manifest = json.loads((root / "dataset" / "manifest.json").read_text())
    assert {(s["collection"], s["repository"], s["pieces"]) for s in manifest["sources"]} == {
        ("OpenScore-Lieder", LIEDER_REPOSITORY, 8), ("OpenScore-StringQuartets", QUARTETS_REPOSITORY, 5)}


def test_near_duplicates_and_movements_share_a_group(built):
    root, _, _ = built
    records = _by_name(_records(root / "dataset"))
    # The Gute Nacht tune as a four-part hymn joins Gute Nacht's group; Der Lindenbaum, in the same set, does not.
    assert records["lc1.mxl"]["group"] == records["lc4.mxl"]["group"] != records["lc2.mxl"]["group"]
    # The standalone song's tune is the quartet's second movement: the whole quartet joins its group.
    quartet = {records[f"sq10.mxl#m{n}"]["group"] for n in (1, 2, 3)} | {records["lc3.mxl"]["group"]}
    assert len(quartet) == 1
    # Nothing else is joined: 13 pieces, 9 works, 7 groups.
    assert len({r["work"] for r in records.values()}) == 9
    assert len({r["group"] for r in records.values()}) == 7
    report = json.loads((root / "dataset" / "report.json").read_text())
    assert report["grouping"]["near_duplicate_pairs"] == 2
    assert report["totals"]["works"] == 9 and report["totals"]["groups"] == 7


@pytest.mark.parametrize("seed", range(6))
def test_split_never_divides_a_group(built, collections, seed):
    root, _, _ = built
    _, lieder, quartets, _ = collections
    summary = build_dataset([lieder, quartets], root / "dataset", workers=1, progress=False, log=lambda m: None,
                            eval_fraction=0.5, seed=seed)
    assert summary.converted_now == 0  # the journal already holds every piece: only the split is derived again
    splits = defaultdict(set)
    for record in _records(root / "dataset"):
        splits[record["group"]].add(record["split"])
    assert all(len(s) == 1 for s in splits.values()), splits
    assert {"train", "eval"} <= set().union(*splits.values())


def test_report_per_collection_and_label(built):
    root, _, _ = built
    report = json.loads((root / "dataset" / "report.json").read_text())
    rows = {(r["collection"], r["label"]): r for r in report["labels"]}
    schubert = rows[("OpenScore-Lieder", "Romantic / Schubert, Franz / Art Song")]
    assert schubert["built"] == 3 and schubert["train"] + schubert["eval"] == 3
    assert schubert["bars"] == 18 and schubert["chars"] > 0 and schubert["refused"] == {}
    haydn = rows[("OpenScore-StringQuartets", "Classical / Haydn, Joseph / Chamber")]
    assert haydn["built"] == 3 and haydn["bars"] == 18
    assert rows[("OpenScore-Lieder", "(unlabelled)")]["built"] == 1
    assert rows[("OpenScore-Lieder", "(unlabelled)")]["refused"] == {"no MusicXML": 1}  # the MuseScore-only folder
    collection = report["collections"]["OpenScore-Lieder"]
    assert collection["built"] == 8 and collection["failed"] == 1 and collection["bars"] == sum(
        r["bars"] for (c, _), r in rows.items() if c == "OpenScore-Lieder")
    markdown = (root / "dataset" / "report.md").read_text(encoding="utf-8")
    assert "| OpenScore-StringQuartets | Classical / Haydn, Joseph / Chamber | 3 |" in markdown
    assert "Labels with at least 20 train pieces (all collections): **0**." in markdown
    totals = {r["label"]: r for r in report["label_totals"]}
    assert totals["Romantic / Schubert, Franz / Art Song"]["collections"] == ["OpenScore-Lieder"]
    assert totals["(unlabelled)"]["refused"] == {"no MusicXML": 1} and totals["(unlabelled)"]["built"] == 1
