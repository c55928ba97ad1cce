"""(period, composer, instrumentation) labels for built pieces.

Two sources, first match wins: a user mapping file (`--labels FILE`, YAML or CSV: a glob pattern over the piece's
relative path → period, composer, instrumentation), then, for the music21 corpus, the built-in mapping below
(corpus.md section 2).

Built-in policy: only pieces that fit NotaGen's own label vocabulary (periods Baroque / Classical / Romantic;
instrumentations Art Song, Chamber, Choral, Keyboard, Orchestral, Vocal-Orchestral) get a label. Renaissance and
Medieval polyphony (Palestrina, Monteverdi, Josquin, trecento), 20th-century singles and the folk collections get
**null**: pre-training uses every piece, fine-tuning (`labelled_only=True`) only the labelled ones, so a model
fine-tuned on this data never sees a prompt it was not meant to know. A mapping file can label them (a new period
such as "Renaissance" is allowed: the prompt registry comes from the data).
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass
from pathlib import Path

from unidecode import unidecode

from notagen.errors import InputError

LABEL_FIELDS = ("period", "composer", "instrumentation")


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

    def labels_for(self, rel: str, path: str = "", corpus: bool = False) -> dict[str, str] | None:
        """First matching user rule, else (for corpus pieces) the first matching built-in rule, else None."""
        for rule in self.rules:
            if _matches(rule.pattern, rel, path):
                return dict(rule.labels) if rule.labels else None
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
