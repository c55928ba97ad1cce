"""Score collections kept as git repositories in the OpenScore layout (OpenScore Lieder, OpenScore String Quartets).

Layout: `scores/<Composer>/<set>/[<song>/]<id>.mxl` beside MuseScore files, with `data/composers.tsv` (composer
folder, born, died...). `<Composer>` is `Last,_First`; a set `_` holds standalone songs. One command builds such a
clone: each `.mxl` is an input (multi-movement files are split by `notagen.data.movements`), labelled from the
metadata: composer from the folder name, period from the composer's dates (`composers.tsv`, else the years in the
composer's README.md), instrumentation from the score's parts. Each piece records the repository, the commit of the
clone and the file's path in it, and its work (the folder holding the score: a quartet, or a song), so that the
movements of a work never straddle the split.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path

from notagen.data.labels import composer_label, instrumentation_of, period_of
from notagen.data.movements import Outline
from notagen.data.sources import Discovery, Skip, git_provenance, jobs_for_file, public_url

SCORES = "scores"
COMPOSERS_TSV = Path("data") / "composers.tsv"
_YEARS = re.compile(r"\((?:c\.\s*)?(\d{3,4})\s*[–-]\s*(?:c\.\s*)?(\d{3,4})\)")


@dataclass(frozen=True)
class KnownCollection:
    """A collection recognised by a marker in its README: its canonical name, repository and licence."""

    name: str
    repository: str
    licence: str
    marker: str


KNOWN_COLLECTIONS: tuple[KnownCollection, ...] = (
    KnownCollection("OpenScore-Lieder", "https://github.com/OpenScore/Lieder",
                    "CC0-1.0 (OpenScore Lieder, LICENSE.txt)", "openscore-lieder-corpus"),
    KnownCollection("OpenScore-StringQuartets", "https://github.com/OpenScore/StringQuartets",
                    "CC0-1.0 (OpenScore String Quartets, LICENSE.txt)", "openscore-string-quartets"),
)


def is_repository(folder: Path) -> bool:
    """True for a folder in the OpenScore layout (a `scores/` folder and `data/composers.tsv`)."""
    return (folder / SCORES).is_dir() and (folder / COMPOSERS_TSV).is_file()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def identify(folder: Path) -> KnownCollection:
    """The known collection a repository folder is (by its README), or a generic one named after the folder."""
    readme = _read_text(folder / "README.md").lower()
    for known in KNOWN_COLLECTIONS:
        if known.marker in readme:
            return known
    licence_text = _read_text(folder / "LICENSE.txt") or _read_text(folder / "LICENSE")
    licence = "CC0-1.0 (LICENSE.txt)" if "CC0" in licence_text else "see the repository's licence file"
    return KnownCollection(folder.resolve().name, "", licence, "")


def composer_years(folder: Path) -> dict[str, tuple[int | None, int | None]]:
    """{composer folder: (born, died)} from data/composers.tsv, completed from each composer's README.md
    ("German composer (1805–1847)") for composers the table does not list."""
    years: dict[str, tuple[int | None, int | None]] = {}
    lines = _read_text(folder / COMPOSERS_TSV).splitlines()
    for row in csv.DictReader(lines, delimiter="\t"):
        name = (row.get("path") or "").strip()
        if name:
            years[name] = (_year(row.get("born")), _year(row.get("died")))
    for composer in sorted((folder / SCORES).iterdir()):
        if composer.is_dir() and years.get(composer.name, (None, None)) == (None, None):
            match = _YEARS.search(_read_text(composer / "README.md"))
            if match:
                years[composer.name] = (int(match.group(1)), int(match.group(2)))
    return years


def _year(text: str | None) -> int | None:
    match = re.search(r"\d{3,4}", text or "")
    return int(match.group(0)) if match else None


def _title(folder_name: str) -> str:
    return folder_name.replace("_", " ").strip()


def _labels(composer: str, years: tuple[int | None, int | None] | None,
            outline: Outline | None) -> tuple[tuple[str, str, str] | None, str]:
    """(labels, why none) for one score."""
    period = period_of(*years) if years else None
    if period is None:
        return None, f"no dates for composer '{composer}'"
    instrumentation = instrumentation_of(outline.families) if outline else None
    if instrumentation is None:
        return None, "no parts could be read"
    return (period, composer_label(composer), instrumentation), ""


def discover_repository(folder: Path) -> Discovery:
    """Jobs for every `.mxl` score of a repository folder in the OpenScore layout, labelled from its metadata."""
    collection = identify(folder)
    top, commit, origin = git_provenance(folder)
    repository = collection.repository or public_url(origin) or str(folder.resolve())
    base = top if top is not None else folder
    years = composer_years(folder)
    out = Discovery()
    scores = folder / SCORES
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(scores.rglob("*")):
        if path.is_dir() and not path.name.startswith("."):
            by_folder.setdefault(path, [])
        elif path.suffix.lower() == ".mxl":
            by_folder.setdefault(path.parent, []).append(path)
    for holder, files in by_folder.items():
        rel_parts = holder.relative_to(scores).parts
        # A score folder is composer/set (quartets) or composer/set/song (songs); folders above hold no scores.
        if not files:
            if len(rel_parts) >= 2 and not any(p.is_dir() for p in holder.iterdir()) and \
                    any(p.suffix.lower() in (".mscx", ".mscz") for p in holder.iterdir()):
                out.skips.append(Skip(f"{collection.name}/{holder.relative_to(folder).as_posix()}", collection.name,
                                      "no MusicXML export (.mxl) in this score folder, only MuseScore files"))
            continue
        composer = rel_parts[0] if rel_parts else ""
        # The folder holding the score is the work: a quartet (composer/set: all its movements, in one file or
        # several), a song (composer/set/song). A set of songs ("6 Lieder, Op. 10") is a publication of separate
        # pieces, not one work: grouping it would put whole opus numbers, hence whole composers, on one side of
        # the split; songs that share music (a reprise, one song in two sets) are joined as near-duplicates.
        work = f"{collection.name}/" + "/".join(rel_parts)
        for path in files:
            rel = path.relative_to(scores).as_posix()
            source = f"{collection.name}/{path.relative_to(folder).as_posix()}"
            jobs, outline = jobs_for_file(path, f"{collection.name}/{rel}", collection.name, collection.licence,
                                           out, source=source)
            labels, note = _labels(composer, years.get(composer), outline)
            title = _title(holder.name)
            repo_path = path.resolve().relative_to(base.resolve()).as_posix()
            out.jobs.extend(replace(job, rel=rel, work=work, labels=labels, label_note=note,
                                    repository=repository, commit=commit, repo_path=repo_path,
                                    title=f"{title}: {job.title}" if job.title else title) for job in jobs)
    return out
