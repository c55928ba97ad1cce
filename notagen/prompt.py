"""The (period, composer, instrumentation) prompt: one type, one parse, one format.

A prompt is written three ways, all from here: as text `period | composer | instrumentation` (recipes, metric keys,
reports, messages), as a mapping `{"period", "composer", "instrumentation"}` (labels, registries, manifests), and as
the prompt lines a fine-tuned model reads before a piece (`%period`, `%composer`, `%instrumentation`, `%end`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notagen.abc.text import ascii_fold, prompt_lines
from notagen.errors import PromptError

FIELDS = ("period", "composer", "instrumentation")
SEPARATOR = " | "


def _clean(value: Any) -> str:
    return " ".join(str(value).split())


@dataclass(frozen=True, order=True)
class Prompt:
    period: str
    composer: str
    """"Last, First", as the training labels spell it."""
    instrumentation: str

    @classmethod
    def parse(cls, text: str) -> Prompt:
        """`period | composer | instrumentation` → Prompt (spaces collapsed); PromptError when it is not three
        non-empty fields."""
        parts = [_clean(part) for part in str(text).split("|")]
        if len(parts) != len(FIELDS) or not all(parts):
            raise PromptError(f"prompt {_clean(text)!r} is not 'period | composer | instrumentation'")
        return cls(*parts)

    @classmethod
    def of(cls, mapping: Mapping[str, Any] | None) -> Prompt | None:
        """The prompt of a mapping with the three fields (labels, a registry entry, a manifest); None when one is
        missing or empty."""
        if not mapping or not all(mapping.get(key) for key in FIELDS):
            return None
        return cls(*(_clean(mapping[key]) for key in FIELDS))

    @classmethod
    def from_text(cls, text: str) -> Prompt | None:
        """The prompt lines a piece starts with (`%period`, `%composer`, `%instrumentation`, `%end`), if any."""
        lines = prompt_lines(text)
        return cls(*lines[:3]) if len(lines) >= 3 and all(lines[:3]) else None

    def __str__(self) -> str:
        return SEPARATOR.join(self.fields())

    def fields(self) -> tuple[str, str, str]:
        return self.period, self.composer, self.instrumentation

    def to_dict(self) -> dict[str, str]:
        return dict(zip(FIELDS, self.fields()))

    def block(self) -> str:
        """The prompt block a fine-tuning text starts with: `%period\\n%composer\\n%instrumentation\\n%end\\n`,
        ASCII-folded (the model one-hots 128 byte classes)."""
        return self.context() + "%end\n"

    def context(self) -> str:
        """The prompt lines a model is given to write a piece (it writes `%end` itself)."""
        return "".join(f"%{_clean(ascii_fold(value))}\n" for value in self.fields())

    def short(self) -> str:
        """"Bach / Choral": the composer's last name and the instrumentation (table headers)."""
        return f"{self.composer.split(',')[0]} / {self.instrumentation}"


def prompt_key(labels: Mapping[str, Any] | None) -> str | None:
    """The text of a mapping's prompt (the key metrics group pieces by), or None when it has none."""
    prompt = Prompt.of(labels)
    return None if prompt is None else str(prompt)


def prompt_context(prompt: Prompt | None) -> str:
    """What a model is given to write a piece: the prompt lines, or nothing (unconditional)."""
    return "" if prompt is None else prompt.context()


def _norm(value: str) -> str:
    return " ".join(ascii_fold(value).split()).casefold()


def resolve_prompt(period: str | None, composer: str | None, instrumentation: str | None,
                   registry: list[dict]) -> Prompt | None:
    """The registry entry the user's prompt names, None for unconditional generation.

    Fields left out match anything, as long as exactly one entry remains. An empty registry (a model without
    one) accepts a complete prompt unchecked. Raises PromptError listing the closest valid prompts.
    """
    given = dict(zip(FIELDS, (period, composer, instrumentation)))
    if all(value is None for value in given.values()):
        return None
    if not registry:
        missing = [key for key, value in given.items() if value is None]
        if missing:
            raise PromptError(f"this model has no prompt registry: give all of --period, --composer and "
                              f"--instrumentation (missing {', '.join('--' + m for m in missing)})")
        prompt = Prompt.of(given)
        if prompt is None:
            raise PromptError(f"prompt {SEPARATOR.join(_clean(v) for v in given.values())!r} has an empty field")
        return prompt
    entries = [prompt for prompt in map(Prompt.of, registry) if prompt is not None]
    matches = [entry for entry in entries
               if all(value is None or _norm(value) == _norm(getattr(entry, key)) for key, value in given.items())]
    if len(matches) == 1:
        return matches[0]
    wanted = SEPARATOR.join(given[key] or "*" for key in FIELDS)
    if len(matches) > 1:
        options = "; ".join(str(entry) for entry in matches[:5])
        more = f" (+{len(matches) - 5} more)" if len(matches) > 5 else ""
        raise PromptError(f"prompt {wanted!r} is ambiguous: {options}{more}; give the missing field(s) "
                          f"(see `notagen prompts`)")
    labels = {str(entry).casefold(): str(entry) for entry in entries}
    query = SEPARATOR.join(given[key] or "" for key in FIELDS).casefold()
    close = [labels[key] for key in difflib.get_close_matches(query, list(labels), n=5, cutoff=0.0)]
    raise PromptError(f"unknown prompt {wanted!r} for this model; closest: {'; '.join(close)} "
                      f"(all {len(registry)}: `notagen prompts`)")


__all__ = ["FIELDS", "Prompt", "SEPARATOR", "prompt_context", "prompt_key", "resolve_prompt"]
