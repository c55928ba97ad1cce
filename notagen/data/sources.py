"""Input discovery for `notagen data build`: files, folders and the music21 corpus.

Discovery is cheap and runs in the parent process: it walks the inputs, reads each file once (to hash it and to
split multi-tune ABC files into their `X:` tunes), applies the corpus exclusion policy and returns one `Job` per
piece plus one `Skip` per input that cannot become a piece (with its reason). The expensive conversion happens
later, in worker processes, from the `Job` alone.

A MusicXML file that holds several movements gives one job per movement (`notagen.data.movements`). Every job names
the work it belongs to (`work`: the movements of a quartet, the sections of a mass), so that the split can keep a
work on one side, and where it comes from (repository, commit, path inside the repository). Repository folders in
the OpenScore layout (`notagen.data.repositories`) add labels from their metadata.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from unidecode import unidecode

from notagen.abc.text import is_comment_line
from notagen.convert import decode_text
from notagen.data.movements import Outline, score_outline
from notagen.errors import NotaGenError
from notagen.io import content_hash
from notagen.limits import LimitError, check_archive, check_input_size

SCORE_SUFFIXES = {".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "mxl", ".abc": "abc", ".krn": "krn"}

USER_LICENCE = "unknown (user input: check the source's terms)"
CORPUS_LICENCE = ("music21 corpus: encodings distributed with permission (music21/corpus/license.txt); "
                  "some may restrict commercial use")
# Provenance per music21 collection; collections not listed get CORPUS_LICENCE.
COLLECTION_LICENCES: dict[str, str] = {
    "essenFolksong": ("Essen folksong ABC by Seymour Shlien: non-commercial distribution and use only "
                      "(essenFolksong/license.txt); EsAC legal status unclear"),
    "palestrina": ("kern (c) 2000 John Miller; rights to derivative electronic formats reserved "
                   "(!!!YEM header): derived ABC is a legal question for the team"),
    "josquin": "ABC (c) 1999 Laura E. Conrad, GPL-2.0-or-later",
    "bach": CORPUS_LICENCE + "; terms of the mxl chorales not stated",
}

# music21 corpus policy: whole folders skipped, and single duplicate encodings.
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
MUSIC21_REPOSITORY = "https://github.com/cuthbertLab/music21"
MAX_PIECE_ID = 120  # piece ids are file names: long paths are cut and made unique with a hash

_TUNE_START = re.compile(r"^X:[ \t]*(\d*)", re.MULTILINE)
_PIECE_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KERN_WORK = re.compile(r"^!!!OPR:[ \t]*(.+?)[ \t]*$", re.MULTILINE)      # Humdrum: the parent work (a mass)
_MOVEMENT_FILE = re.compile(r"^(?:movement|mvt|mov)[ _.-]?\d+$", re.IGNORECASE)  # movement1.mxl: its folder is the work


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
    movement: int | None = None    # 1-based movement of a multi-movement MusicXML file
    measures: tuple[int, int] | None = None  # that movement's measures [start, end) in every part
    work: str = ""                 # pieces of one work (movements, mass sections) stay on one side of the split
    labels: tuple[str, str, str] | None = None  # (period, composer, instrumentation) from the collection's metadata
    label_note: str = ""           # why the collection's metadata gave no labels
    repository: str | None = None  # provenance: repository URL, commit (or release tag), path inside it
    commit: str | None = None
    repo_path: str | None = None
    title: str = ""


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
    lines = [ln for ln in header.splitlines() if ln.strip() and not is_comment_line(ln)]
    return "\n".join(lines) + ("\n" if lines else "")


def make_piece_id(rel: str, tune: int | None = None, movement: int | None = None) -> str:
    """A file-name-safe, readable ASCII id from a relative path (`bach/bwv66.6.mxl` → `bach-bwv66.6`; the 7th tune
    of a file gets `-0007`, its 2nd movement `-m02`); ids longer than MAX_PIECE_ID are cut and end in a hash."""
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    piece_id = _PIECE_ID_UNSAFE.sub("_", unidecode(stem).replace("/", "-"))
    piece_id = re.sub(r"[_-]*-[_-]*", "-", re.sub(r"__+", "_", piece_id)).strip("._-") or "piece"
    if len(piece_id) > MAX_PIECE_ID:
        piece_id = piece_id[: MAX_PIECE_ID - 9].rstrip("._-") + "_" + content_hash(stem)[:8]
    if tune is not None:
        piece_id += f"-{tune:04d}"
    if movement is not None:
        piece_id += f"-m{movement:02d}"
    return piece_id


def git_provenance(folder: Path) -> tuple[Path | None, str | None, str | None]:
    """(top folder, commit, origin URL) of the git work tree holding `folder`; Nones when it is not one (or git is
    not installed). The commit says which version of a collection was built, as long as its files are unmodified."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None, None, None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        return None, None, None
    try:
        origin = subprocess.run(["git", "-C", str(folder), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=60).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        origin = None
    return Path(lines[0]), lines[1], origin


def public_url(origin: str | None) -> str | None:
    """A git remote as a repository URL to record (`git@github.com:a/b.git` → `https://github.com/a/b`); None for
    a local path, which says nothing to anyone else."""
    if not origin:
        return None
    match = re.match(r"^(?:https?://|ssh://)?(?:[^@/]+@)?([A-Za-z0-9.-]+\.[A-Za-z]{2,})[:/](.+?)(?:\.git)?/?$", origin)
    return f"https://{match.group(1)}/{match.group(2)}" if match else None


def _preflight(path: Path, data: bytes, fmt: str) -> str | None:
    """A cheap reason why the bytes cannot be a score of this format, or None when they may be."""
    if not data.strip():
        return "empty file"
    if fmt == "mxl":
        if not data.startswith(b"PK"):
            return "corrupt .mxl: not a zip archive"
        try:
            with zipfile.ZipFile(path) as archive:
                check_archive(archive, path.name)   # before testzip inflates anything
                bad = archive.testzip()
        except LimitError as error:
            return str(error).removeprefix(f"{path.name}: ")
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"corrupt .mxl: {error}"
        if bad is not None:
            return f"corrupt .mxl: bad member {bad}"
        return None
    head = decode_text(data[:65536])   # the one text reader: UTF-16 XML (some trecento files) reads as text
    if "\x00" in head:
        return "binary file, not a text score"
    if fmt == "musicxml":
        if not head.lstrip("\ufeff \t\r\n").startswith("<"):
            return "not XML (does not start with '<')"
        if "score-partwise" not in head and "score-timewise" not in head:
            return "not a score (no <score-partwise> or <score-timewise> element)"
    return None


def _musicxml_outline(path: Path) -> Outline | None:
    """Parts and movements of a MusicXML/MXL file, or None when it cannot be read here (the worker reports why)."""
    from notagen.convert import score_to_musicxml

    try:
        return score_outline(score_to_musicxml(path))
    except (NotaGenError, ValueError, OSError, RecursionError):
        return None


def default_work(collection: str, rel: str) -> str:
    """The work a file belongs to when nothing better is known: the file itself, or its folder when the file is one
    movement of a work stored one movement per file (`opus18no1/movement2.mxl`)."""
    path = Path(rel)
    if _MOVEMENT_FILE.match(path.stem) and path.parent.as_posix() not in ("", "."):
        return f"{collection}/{path.parent.as_posix()}"
    return f"{collection}/{rel}"


def jobs_for_file(path: Path, rel: str, collection: str, licence: str, out: Discovery,
                   merge_tunes: bool = False, source: str | None = None,
                   work_prefix: str | None = None) -> tuple[list[Job], Outline | None]:
    """Read one file: its jobs (one per piece: a tune, a movement, or the file), or a skip with the reason added to
    `out.skips`; also the outline of a MusicXML file (parts, movements). `source` names it in reports; work names
    start with `work_prefix` (default: the collection)."""
    fmt = SCORE_SUFFIXES.get(path.suffix.lower())
    source = source or str(path)
    if fmt is None:
        out.skips.append(Skip(source, collection, f"unsupported file type '{path.suffix or path.name}'"))
        return [], None
    try:
        check_input_size(path.stat().st_size, path.name)
        data = path.read_bytes()
    except LimitError as error:
        out.skips.append(Skip(source, collection, str(error).removeprefix(f"{path.name}: ")))
        return [], None
    except OSError as error:
        out.skips.append(Skip(source, collection, f"unreadable: {error.strerror or error}"))
        return [], None
    reason = _preflight(path, data, fmt)
    if reason:
        out.skips.append(Skip(source, collection, reason))
        return [], None
    file_hash = content_hash(data)
    work = default_work(work_prefix or collection, rel)
    whole = Job(source, str(path), rel, collection, licence, fmt, file_hash, make_piece_id(rel),
                merge_tunes=merge_tunes, work=work)
    if fmt in ("musicxml", "mxl"):
        outline = _musicxml_outline(path)
        if outline is None or len(outline.movements) < 2:
            return [whole], outline
        return [replace(whole, source=f"{source}#m{m.number}", piece_id=make_piece_id(rel, movement=m.number),
                        hash=content_hash(f"{file_hash}#m{m.number}:{m.start}-{m.end}"), movement=m.number,
                        measures=(m.start, m.end), title=m.heading) for m in outline.movements], outline
    if fmt == "krn":
        opus = _KERN_WORK.search(data[:65536].decode("utf-8", errors="replace"))
        if opus:  # a mass section: the mass is the work
            folder = Path(rel).parent.as_posix()
            whole = replace(whole, work="/".join(p for p in (work_prefix or collection, folder, opus.group(1))
                                                 if p not in ("", ".")))
        return [whole], None
    if fmt != "abc" or merge_tunes:
        return [whole], None
    header, tunes = split_abc_tunes(decode_text(data))
    if len(tunes) <= 1:
        # A single tune (with or without X:) is still ABC; let the converter judge it.
        return [whole], None
    prefix = _file_header_for_tune(header)
    jobs = []
    for number, tune in enumerate(tunes, start=1):
        tune_text = prefix + tune
        jobs.append(replace(whole, source=f"{source}#{number}", hash=content_hash(tune_text),
                            piece_id=make_piece_id(rel, number), tune=number, text=tune_text,
                            work=f"{work}#{number}"))
    return jobs, None


def _with_provenance(jobs: list[Job], top: Path | None, commit: str | None, origin: str | None) -> list[Job]:
    if top is None:
        return jobs
    repository = public_url(origin) or str(top)
    return [replace(job, repository=repository, commit=commit,
                    repo_path=Path(job.path).resolve().relative_to(top.resolve()).as_posix()) for job in jobs]


def _walk(root: Path, out: Discovery) -> list[Path]:
    """The score files under a folder, sorted; every other entry is a skip with its reason: links to folders are
    not followed (a link loop would never end), hidden entries, other file types (`.mid`: MIDI has no notation to
    learn from) and unreadable folders are reported (other file types as excluded, not as failures)."""
    collection = root.resolve().name or "inputs"
    files: list[Path] = []
    problems: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=problems.append):
        here = Path(dirpath)
        for name in sorted(dirnames):
            entry = here / name
            if entry.is_symlink():
                out.skips.append(Skip(str(entry), collection, "link to a folder, not followed"))
                dirnames.remove(name)
            elif name.startswith("."):
                out.skips.append(Skip(str(entry), collection, "hidden folder, not read", policy=True))
                dirnames.remove(name)
        for name in filenames:
            entry = here / name
            if name.startswith("."):
                out.skips.append(Skip(str(entry), collection, "hidden file, not read", policy=True))
            elif not entry.is_file():
                out.skips.append(Skip(str(entry), collection, "unreadable: a broken link or not a regular file"))
            elif entry.suffix.lower() in (".mid", ".midi"):
                out.skips.append(Skip(str(entry), collection, "unsupported file type: MIDI has no notation to build "
                                                              "from", policy=True))
            elif entry.suffix.lower() not in SCORE_SUFFIXES:
                out.skips.append(Skip(str(entry), collection, f"unsupported file type '{entry.suffix or name}'",
                                      policy=True))
            else:
                files.append(entry)
    for error in problems:
        out.skips.append(Skip(str(error.filename or root), collection,
                              f"unreadable folder: {error.strerror or error}"))
    return sorted(files)


def discover_inputs(inputs: list[str | Path]) -> Discovery:
    """Jobs for user-given files and folders (folders are walked recursively for score files; a repository folder
    in the OpenScore layout is read as that collection, with labels from its metadata)."""
    from notagen.data.repositories import discover_repository, is_repository

    out = Discovery()
    for item in inputs:
        root = Path(item)
        if not root.exists():
            out.skips.append(Skip(str(root), "inputs", "no such file or folder"))
            continue
        if root.is_file():
            collection = root.parent.name or "inputs"
            jobs, _ = jobs_for_file(root, root.name, collection, USER_LICENCE, out)
            out.jobs.extend(_with_provenance(jobs, *git_provenance(root.parent)))
            continue
        if is_repository(root):
            found = discover_repository(root)
            out.jobs.extend(found.jobs)
            out.skips.extend(found.skips)
            continue
        files = _walk(root, out)
        provenance = git_provenance(root)
        for path in files:
            jobs, _ = jobs_for_file(path, path.relative_to(root).as_posix(), root.resolve().name or "inputs",
                                     USER_LICENCE, out)
            out.jobs.extend(_with_provenance(jobs, *provenance))
    return out


def discover_music21_corpus(include_essen: bool = False, corpus_dir: Path | None = None) -> Discovery:
    """Jobs for the music21 bundled corpus, with its exclusion policy."""
    base = corpus_dir or music21_corpus_dir()
    if corpus_dir is None:
        from music21.corpus import corpora

        paths = sorted(Path(p) for p in corpora.CoreCorpus().getPaths())
    else:
        paths = sorted(p for p in base.rglob("*") if p.is_file())
    release = _music21_release()
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
        jobs, _ = jobs_for_file(path, rel, collection, licence, out,
                                 merge_tunes=collection in MERGE_TUNE_COLLECTIONS,
                                 source=f"{CORPUS_SOURCE_PREFIX}{rel}", work_prefix="music21")
        out.jobs.extend(replace(job, repository=MUSIC21_REPOSITORY, commit=release,
                                repo_path=f"music21/corpus/{rel}") for job in jobs)
    return out


def _music21_release() -> str | None:
    """The music21 release tag (`v10.5.1`) whose corpus is installed: the corpus files are those of that tag."""
    try:
        import music21
    except ImportError:
        return None
    return f"v{music21.__version__}"


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
