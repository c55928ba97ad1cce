"""(period, composer, instrumentation) labels for built pieces.

Three sources, first match wins: a user mapping file (`--labels FILE`, YAML or CSV: a glob pattern over the piece's
relative path → period, composer, instrumentation); the metadata of a repository collection (OpenScore Lieder and
String Quartets: composer from the folder name, period from the composer's dates, instrumentation from the parts,
see `notagen.data.repositories`); then, for the music21 corpus, the built-in mapping below.

The vocabulary is NotaGen's (periods Baroque / Classical / Romantic; composers "Last, First" in ASCII;
instrumentations Art Song, Chamber, Choral, Keyboard, Orchestral, Vocal-Orchestral), extended in the same style
where the data needs it: periods Medieval and Renaissance, a Traditional period for folk tunes (whose "composer" is
the collection's compiler), and the Folk Tune instrumentation (one melodic line). A period is given by the
composer's birth year (`period_of`), with NotaGen's boundaries: its own 62 composers all fall in the period it gave
them, including Louise Reichardt (1779) in Classical, Emilie Zumsteeg (1796) in Romantic and the 20th-century
composers (Bartok, Prokofiev, Shostakovich) in Romantic. Pieces with no label (the trecento, 20th-century music21
singles without a rule, user files) are used by pre-training only: fine-tuning (`labelled_only=True`) never sees a
prompt nobody chose.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from unidecode import unidecode

from notagen.errors import InputError

LABEL_FIELDS = ("period", "composer", "instrumentation")

# First birth year of each period (NotaGen's three, plus Medieval and Renaissance before them).
PERIOD_BOUNDARIES: tuple[tuple[int, str], ...] = (
    (1390, "Renaissance"), (1600, "Baroque"), (1710, "Classical"), (1780, "Romantic"))
EARLIEST_PERIOD = "Medieval"
TYPICAL_LIFESPAN = 60  # birth year guessed from the death year when only that is known
ART_SONG_MAX_VOICES = 3  # more sung parts than this with piano: a part-song (Choral), not a song
CHAMBER_MAX_PARTS = 9    # more instrumental parts than this: an orchestra
# Catalogue names that NotaGen's prompts spell differently: its spelling wins, so its prompts name the same composer.
COMPOSER_ALIASES = {"Faisst, Clara Mathilda": "Faisst, Clara"}


def period_of(born: int | None, died: int | None = None) -> str | None:
    """The period of a composer from the birth year (or the death year less TYPICAL_LIFESPAN); None if neither."""
    year = born if born is not None else (died - TYPICAL_LIFESPAN if died is not None else None)
    if year is None:
        return None
    period = EARLIEST_PERIOD
    for first_year, name in PERIOD_BOUNDARIES:
        if year >= first_year:
            period = name
    return period


def composer_label(name: str) -> str:
    """ "Last, First" in ASCII from a catalogue name: `Holmès,_Augusta_Mary_Anne` → `Holmes, Augusta Mary Anne`,
    `Hensel,_Fanny_(Mendelssohn)` → `Hensel, Fanny` (bracketed notes dropped), `Indy,_Vincent_d’` → `Indy,
    Vincent d'`."""
    text = re.sub(r"\([^)]*\)", " ", name.replace("_", " "))
    text = unidecode(text)
    text = ", ".join(" ".join(part.split()) for part in text.split(",")).strip(" ,")
    return COMPOSER_ALIASES.get(text, text)


def instrumentation_of(families: list[str]) -> str | None:
    """NotaGen's instrumentation for a list of part families (`notagen.instruments.FAMILIES`, one per part).

    Voices alone: Choral. Voices with piano (or organ, harp...) only: Art Song up to ART_SONG_MAX_VOICES sung parts,
    Choral above. Voices with other instruments: Vocal-Orchestral from five instrumental parts on, else as with
    piano. No voice: Keyboard for keyboard parts alone, Chamber up to CHAMBER_MAX_PARTS parts, Orchestral above.
    None when there are no parts."""
    if not families:
        return None
    voices = sum(f == "voice" for f in families)
    keyboards = sum(f in ("keyboard", "plucked") for f in families)
    others = len(families) - voices - keyboards
    if voices:
        if not keyboards and not others:
            return "Choral"
        if others + keyboards >= 5:
            return "Vocal-Orchestral"
        return "Art Song" if voices <= ART_SONG_MAX_VOICES else "Choral"
    if not others:
        return "Keyboard"
    return "Chamber" if len(families) <= CHAMBER_MAX_PARTS else "Orchestral"


@dataclass(frozen=True)
class LabelRule:
    """Pieces whose relative path matches `pattern` get `labels` (None: explicitly unlabelled)."""

    pattern: str
    labels: dict[str, str] | None


def _rule(pattern: str, period: str, composer: str, instrumentation: str) -> LabelRule:
    return LabelRule(pattern, {"period": period, "composer": composer, "instrumentation": instrumentation})


BACH = "Bach, Johann Sebastian"
BEETHOVEN = "Beethoven, Ludwig van"
HAYDN = "Haydn, Joseph"
MOZART = "Mozart, Wolfgang Amadeus"
SCHUMANN_R = "Schumann, Robert"
SCHUMANN_C = "Schumann, Clara"
# Folk tunes: period Traditional, the compiler of the collection as "composer", instrumentation Folk Tune.
FOLK = ("Traditional", "Folk Tune")

# Built-in labels for the music21 corpus; patterns match paths relative to music21/corpus.
MUSIC21_RULES: tuple[LabelRule, ...] = (
    _rule("bach/*", "Baroque", BACH, "Choral"),
    _rule("beethoven/*", "Classical", BEETHOVEN, "Chamber"),
    _rule("haydn/*", "Classical", HAYDN, "Chamber"),
    _rule("mozart/k545*", "Classical", MOZART, "Keyboard"),
    _rule("mozart/*", "Classical", MOZART, "Chamber"),
    _rule("schumann_robert/opus48*", "Romantic", SCHUMANN_R, "Art Song"),
    _rule("schumann_robert/dichterliebe*", "Romantic", SCHUMANN_R, "Art Song"),
    _rule("schumann_robert/*", "Romantic", SCHUMANN_R, "Chamber"),
    _rule("schumann_clara/polonaise*", "Romantic", SCHUMANN_C, "Keyboard"),
    _rule("schumann_clara/*", "Romantic", SCHUMANN_C, "Chamber"),
    _rule("schubert/*", "Romantic", "Schubert, Franz", "Art Song"),
    _rule("chopin/*", "Romantic", "Chopin, Frederic", "Keyboard"),
    _rule("joplin/*", "Romantic", "Joplin, Scott", "Keyboard"),
    _rule("corelli/*", "Baroque", "Corelli, Arcangelo", "Chamber"),
    _rule("handel/*", "Baroque", "Handel, George Frideric", "Art Song"),
    _rule("cpebach/*", "Classical", "Bach, Carl Philipp Emanuel", "Keyboard"),
    _rule("weber/*", "Romantic", "Weber, Carl Maria von", "Chamber"),
    _rule("verdi/*", "Romantic", "Verdi, Giuseppe", "Keyboard"),
    _rule("beach/*", "Romantic", "Beach, Amy", "Choral"),
    _rule("liliuokalani/*", "Romantic", "Liliuokalani", "Choral"),
    _rule("johnson_j_r/*", "Romantic", "Johnson, J. Rosamond", "Choral"),
    _rule("schoenberg/*", "Romantic", "Schoenberg, Arnold", "Keyboard"),
    _rule("webern/*", "Romantic", "Webern, Anton", "Art Song"),
    _rule("palestrina/*", "Renaissance", "Palestrina, Giovanni Pierluigi da", "Choral"),
    _rule("monteverdi/*", "Renaissance", "Monteverdi, Claudio", "Choral"),
    _rule("josquin/*", "Renaissance", "Josquin des Prez", "Choral"),
    _rule("ciconia/*", "Medieval", "Ciconia, Johannes", "Choral"),
    _rule("oneills1850/*", FOLK[0], "O'Neill, Francis", FOLK[1]),
    _rule("ryansMammoth/*", FOLK[0], "Ryan, William Bradbury", FOLK[1]),
    _rule("airdsAirs/*", FOLK[0], "Aird, James", FOLK[1]),
)


def normalise_labels(period: str, composer: str, instrumentation: str, where: str) -> dict[str, str]:
    """ASCII-fold and check one label triple (the model reads bytes < 128; a prompt line must be one line)."""
    labels = {}
    for name, value in zip(LABEL_FIELDS, (period, composer, instrumentation)):
        value = unidecode(str(value or "")).strip()
        if not value or "\n" in value or value.startswith("%"):
            raise InputError(f"{where}: label '{name}' must be a non-empty single line (got {value!r})")
        labels[name] = value
    return labels


def _is_null_row(values: list[object]) -> bool:
    return all(v is None or str(v).strip() == "" or str(v).strip().lower() in ("null", "none") for v in values)


def load_label_rules(path: str | Path) -> list[LabelRule]:
    """Read a mapping file: YAML (list of {pattern, period, composer, instrumentation}, or {pattern: {...}})
    or CSV (header `pattern,period,composer,instrumentation`). A rule with all three fields empty/null marks
    matching pieces as unlabelled."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    rows: list[tuple[str, list[object], str]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read labels file {path}: {error}") from error
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"pattern", *LABEL_FIELDS} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: CSV needs columns pattern,period,composer,instrumentation "
                             f"(missing {', '.join(sorted(missing))})")
        for line_no, row in enumerate(reader, start=2):
            rows.append((row["pattern"], [row[f] for f in LABEL_FIELDS], f"{path}:{line_no}"))
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(f"{path}: invalid YAML: {str(error).splitlines()[0]}") from error
        if isinstance(data, dict):
            data = [{"pattern": k, **(v or {})} if isinstance(v, dict) or v is None else {"pattern": k, "bad": v}
                    for k, v in data.items()]
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a list of rules or a mapping pattern → labels")
        for number, item in enumerate(data, start=1):
            if not isinstance(item, dict) or "pattern" not in item or "bad" in item:
                raise InputError(f"{path}: rule {number} needs 'pattern' and period/composer/instrumentation")
            rows.append((str(item["pattern"]), [item.get(f) for f in LABEL_FIELDS], f"{path}: rule {number}"))
    else:
        raise InputError(f"labels file must be .yaml, .yml or .csv: {path}")
    rules = []
    for pattern, values, where in rows:
        if not pattern or not str(pattern).strip():
            raise InputError(f"{where}: empty pattern")
        labels = None if _is_null_row(values) else normalise_labels(*(str(v or "") for v in values), where=where)
        rules.append(LabelRule(str(pattern).strip(), labels))
    return rules


class Labeller:
    """Labels for a piece from its relative path (and, for user files, its absolute path)."""

    def __init__(self, user_rules: list[LabelRule] | None = None, builtin_music21: bool = False) -> None:
        self.rules = list(user_rules or [])
        self.builtin = MUSIC21_RULES if builtin_music21 else ()

    def labels_for(self, rel: str, path: str = "", corpus: bool = False,
                   metadata: tuple[str, str, str] | None = None) -> dict[str, str] | None:
        """First matching user rule, else the labels from the collection's `metadata`, else (for corpus pieces) the
        first matching built-in rule, else None."""
        for rule in self.rules:
            if _matches(rule.pattern, rel, path):
                return dict(rule.labels) if rule.labels else None
        if metadata is not None:
            return dict(zip(LABEL_FIELDS, metadata))
        if corpus:
            for rule in self.builtin:
                if fnmatch.fnmatchcase(rel, rule.pattern):
                    return dict(rule.labels) if rule.labels else None
        return None


def _matches(pattern: str, rel: str, path: str) -> bool:
    """A pattern matches the relative path, the absolute path, or any trailing part of the path."""
    if fnmatch.fnmatchcase(rel, pattern) or (path and fnmatch.fnmatchcase(path, pattern)):
        return True
    parts = Path(path or rel).as_posix().split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern) for i in range(len(parts)))
