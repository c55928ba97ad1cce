"""Input discovery for `notagen data build`: files, folders and the music21 corpus.

Discovery is cheap and runs in the parent process: it walks the inputs, reads each file once (to hash it and to
split multi-tune ABC files into their `X:` tunes), applies the corpus exclusion policy and returns one `Job` per
piece plus one `Skip` per input that cannot become a piece (with its reason). The expensive conversion happens
later, in worker processes, from the `Job` alone.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from notagen.io import content_hash

SCORE_SUFFIXES = {".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "mxl", ".abc": "abc", ".krn": "krn"}
MAX_FILE_BYTES = 20 * 1024 * 1024  # a score file larger than this is almost surely not one piece of music

USER_LICENCE = "unknown (user input: check the source's terms)"
CORPUS_LICENCE = ("music21 corpus: encodings distributed with permission (music21/corpus/license.txt); "
                  "some may restrict commercial use")
# Provenance per music21 collection (corpus.md section 3); collections not listed get CORPUS_LICENCE.
COLLECTION_LICENCES: dict[str, str] = {
    "essenFolksong": ("Essen folksong ABC by Seymour Shlien: non-commercial distribution and use only "
                      "(essenFolksong/license.txt); EsAC legal status unclear"),
    "palestrina": ("kern (c) 2000 John Miller; rights to derivative electronic formats reserved "
                   "(!!!YEM header): derived ABC is a legal question for the team"),
    "josquin": "ABC (c) 1999 Laura E. Conrad, GPL-2.0-or-later",
    "bach": CORPUS_LICENCE + "; terms of the mxl chorales not stated",
}

# music21 corpus policy (corpus.md sections 2 and 6): whole folders skipped, and single duplicate encodings.
CORPUS_SKIPPED_DIRS: dict[str, str] = {
    "demos": "not training material (music21 demo files)",
    "theoryExercises": "not training material (theory exercises)",
    "leadSheet": "lead sheet (melody + chord symbols), outside the score vocabulary",
    "nottingham-dataset": "2-tune sample of the Nottingham dataset, not the dataset",
    "essenFolksong": "Essen folksongs: non-commercial licence (use --include-essen to include)",
}
CORPUS_DUPLICATES: dict[str, str] = {
    "bach/bwv277.krn": "bach/bwv277.mxl",
    "bach/bwv281.krn": "bach/bwv281.mxl",
    "bach/bwv366.krn": "bach/bwv366.mxl",
    "beethoven/opus18no1/movement1.krn": "beethoven/opus18no1/movement1.mxl",
    "beethoven/opus18no1/movement2.krn": "beethoven/opus18no1/movement2.mxl",
    "beethoven/opus18no1/movement3.krn": "beethoven/opus18no1/movement3.mxl",
    "beethoven/opus18no1/movement4.krn": "beethoven/opus18no1/movement4.mxl",
    "schumann_robert/dichterliebe_no2.xml": "schumann_robert/opus48no2.mxl",
}
# Collections whose ABC files hold one X: tune per voice of a single piece: merged into one score.
MERGE_TUNE_COLLECTIONS = {"josquin"}
CORPUS_SOURCE_PREFIX = "music21/corpus/"  # how corpus pieces are named in the index (independent of the install)

_TUNE_START = re.compile(r"^X:[ \t]*(\d*)", re.MULTILINE)
_PIECE_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Job:
    """One piece to build: a score file, or one tune of a multi-tune ABC file (its text carried along)."""

    source: str            # what the index shows: the path, plus "#n" for the n-th tune of an ABC file
    path: str              # the file on disk
    rel: str               # path relative to its input root / corpus folder (label patterns match this)
    collection: str
    licence: str
    format: str            # musicxml, mxl, abc, krn
    hash: str              # content hash of the input (the file, or the tune's text)
    piece_id: str = ""
    tune: int | None = None        # 1-based ordinal of the tune in a multi-tune ABC file
    text: str | None = None        # the tune's ABC text (file header + tune) for multi-tune ABC files
    merge_tunes: bool = False      # every X: tune of the file is one voice of the same piece (Josquin)


@dataclass(frozen=True)
class Skip:
    """An input that yields no piece, and why (missing, unreadable, excluded by policy, duplicate...)."""

    source: str
    collection: str
    reason: str
    policy: bool = False   # True: excluded on purpose (corpus policy), not a failure


@dataclass
class Discovery:
    jobs: list[Job] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


def music21_corpus_dir() -> Path:
    """The folder of the corpus bundled in the installed music21 package."""
    import music21.corpus

    return Path(music21.corpus.__file__).parent


def split_abc_tunes(text: str) -> tuple[str, list[str]]:
    """Split an ABC file into its file header (text before the first `X:`) and its tunes, each from `X:` on."""
    starts = [m.start() for m in _TUNE_START.finditer(text)]
    if not starts:
        return text, []
    bounds = starts + [len(text)]
    return text[: starts[0]], [text[a:b].rstrip() + "\n" for a, b in zip(bounds, bounds[1:])]


def _file_header_for_tune(header: str) -> str:
    """Keep the file header's directives and fields, drop its free-text comments (licence blurbs and such)."""
    lines = [ln for ln in header.splitlines() if ln.strip() and (not ln.startswith("%") or ln.startswith("%%"))]
    return "\n".join(lines) + ("\n" if lines else "")


def make_piece_id(rel: str, tune: int | None = None) -> str:
    """A file-name-safe, readable id from a relative path (`bach/bwv66.6.mxl` → `bach-bwv66.6`)."""
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    piece_id = _PIECE_ID_UNSAFE.sub("_", stem.replace("/", "-")).strip("._-") or "piece"
    return f"{piece_id}-{tune:04d}" if tune is not None else piece_id


def _preflight(path: Path, data: bytes, fmt: str) -> str | None:
    """A cheap reason why the bytes cannot be a score of this format, or None when they may be."""
    if not data.strip():
        return "empty file"
    if fmt == "mxl":
        if not data.startswith(b"PK"):
            return "corrupt .mxl: not a zip archive"
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"corrupt .mxl: {error}"
        if bad is not None:
            return f"corrupt .mxl: bad member {bad}"
        return None
    head = data[:65536]
    if fmt == "musicxml" and head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        head = head.decode("utf-16", errors="replace").encode("utf-8")  # UTF-16 XML (some trecento files)
    if b"\x00" in head:
        return "binary file, not a text score"
    if fmt == "musicxml":
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            return "not XML (does not start with '<')"
        if b"score-partwise" not in head and b"score-timewise" not in head:
            return "not a score (no <score-partwise> or <score-timewise> element)"
    return None


def _jobs_for_file(path: Path, rel: str, collection: str, licence: str, out: Discovery,
                   merge_tunes: bool = False, source: str | None = None) -> None:
    """Read one file and append its jobs (or a skip with the reason) to `out`; `source` names it in reports."""
    fmt = SCORE_SUFFIXES.get(path.suffix.lower())
    source = source or str(path)
    if fmt is None:
        out.skips.append(Skip(source, collection, f"unsupported file type '{path.suffix or path.name}'"))
        return
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            out.skips.append(Skip(source, collection, f"too large ({size / 2**20:.1f} MB > "
                                                      f"{MAX_FILE_BYTES // 2**20} MB cap)"))
            return
        data = path.read_bytes()
    except OSError as error:
        out.skips.append(Skip(source, collection, f"unreadable: {error.strerror or error}"))
        return
    reason = _preflight(path, data, fmt)
    if reason:
        out.skips.append(Skip(source, collection, reason))
        return
    if fmt != "abc" or merge_tunes:
        out.jobs.append(Job(source, str(path), rel, collection, licence, fmt, content_hash(data),
                            make_piece_id(rel), merge_tunes=merge_tunes))
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    header, tunes = split_abc_tunes(text)
    if not tunes:
        # A single tune without X: is still ABC; let the converter judge it.
        out.jobs.append(Job(source, str(path), rel, collection, licence, fmt, content_hash(data), make_piece_id(rel)))
        return
    if len(tunes) == 1:
        out.jobs.append(Job(source, str(path), rel, collection, licence, fmt, content_hash(data), make_piece_id(rel)))
        return
    prefix = _file_header_for_tune(header)
    for number, tune in enumerate(tunes, start=1):
        tune_text = prefix + tune
        out.jobs.append(Job(f"{source}#{number}", str(path), rel, collection, licence, fmt,
                            content_hash(tune_text), make_piece_id(rel, number), tune=number, text=tune_text))


def discover_inputs(inputs: list[str | Path]) -> Discovery:
    """Jobs for user-given files and folders (folders are walked recursively for score files)."""
    out = Discovery()
    for item in inputs:
        root = Path(item)
        if not root.exists():
            out.skips.append(Skip(str(root), "inputs", "no such file or folder"))
            continue
        if root.is_file():
            collection = root.parent.name or "inputs"
            _jobs_for_file(root, root.name, collection, USER_LICENCE, out)
            continue
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        except OSError as error:
            out.skips.append(Skip(str(root), root.name, f"unreadable folder: {error.strerror or error}"))
            continue
        for path in files:
            if path.suffix.lower() not in SCORE_SUFFIXES:
                continue  # a folder may hold anything; only score files are inputs
            _jobs_for_file(path, path.relative_to(root).as_posix(), root.resolve().name or "inputs",
                           USER_LICENCE, out)
    return out


def discover_music21_corpus(include_essen: bool = False, corpus_dir: Path | None = None) -> Discovery:
    """Jobs for the music21 bundled corpus, with its exclusion policy (corpus.md section 6)."""
    base = corpus_dir or music21_corpus_dir()
    if corpus_dir is None:
        from music21.corpus import corpora

        paths = sorted(Path(p) for p in corpora.CoreCorpus().getPaths())
    else:
        paths = sorted(p for p in base.rglob("*") if p.is_file())
    out = Discovery()
    for path in paths:
        rel = path.relative_to(base).as_posix()
        collection = rel.split("/", 1)[0] if "/" in rel else "music21"
        if path.suffix.lower() not in SCORE_SUFFIXES:
            continue  # rntxt analyses, .mus/.musx/.png/.psd, licence texts: not scores
        if collection in CORPUS_SKIPPED_DIRS and not (collection == "essenFolksong" and include_essen):
            reason = "excluded: " + CORPUS_SKIPPED_DIRS[collection]
            out.skips.append(Skip(f"{CORPUS_SOURCE_PREFIX}{rel}", collection, reason, policy=True))
            continue
        if rel in CORPUS_DUPLICATES:
            out.skips.append(Skip(f"{CORPUS_SOURCE_PREFIX}{rel}", collection,
                                  f"excluded: duplicate encoding of {CORPUS_DUPLICATES[rel]}", policy=True))
            continue
        licence = COLLECTION_LICENCES.get(collection, CORPUS_LICENCE)
        _jobs_for_file(path, rel, collection, licence, out, merge_tunes=collection in MERGE_TUNE_COLLECTIONS,
                       source=f"{CORPUS_SOURCE_PREFIX}{rel}")
    return out


def dedupe_ids(jobs: list[Job]) -> list[Job]:
    """Give every job a unique piece id (ids from different inputs can collide: a.xml and a.mxl, two folders)."""
    seen: dict[str, int] = {}
    result = []
    for job in jobs:
        base = job.piece_id
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.append(replace(job, piece_id=f"{base}_{job.hash[:8]}") if count else job)
    return result
