"""One table of instruments: how a part is recognised (name, clef), its family, its General MIDI program and
sound, and its range.

Every part of the project that needs to know what a part is reads it here: the strict validity check and the
constrained decoder (notes outside a voice's range), rendering (the MusicXML `<score-instrument>` and MIDI program
of each part), and the music-theory report (instrumentation fit, notes out of range).

Ranges are the usual written ranges of orchestration handbooks (for example the tables of Adler, *The Study of
Orchestration*, and the "Range (music)" article of Wikipedia), as MIDI note numbers, middle C = 60; voices use the
practical choral ranges. Checks allow `RANGE_MARGIN` semitones either side, since real parts touch the edges
(Bach's basses go down to C2 now and then). Nothing may lie outside the piano, A0-C8 (21-108).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PIANO_LOW, PIANO_HIGH = 21, 108
RANGE_MARGIN = 2
FAMILIES = ("voice", "strings", "keyboard", "woodwind", "brass", "plucked", "percussion", "other")


@dataclass(frozen=True)
class Instrument:
    """One kind of part."""

    name: str
    """Canonical name, also written as the MusicXML instrument name (`Violin`, `Soprano`)."""
    family: str
    """One of FAMILIES."""
    program: int
    """General MIDI program, 0-based (Violin = 40)."""
    sound: str
    """MusicXML 3 standard sound id (`strings.violin`), which notation programs use to pick a sound."""
    low: int
    high: int
    """Written range, MIDI note numbers, inclusive."""
    clef: str = "treble"
    """The clef the part is usually written in (`treble`, `bass`, `alto`, `tenor`)."""

    def allows(self, midi: int, margin: int = RANGE_MARGIN) -> bool:
        """True when `midi` lies in the range widened by `margin` semitones (never outside the piano)."""
        return max(PIANO_LOW, self.low - margin) <= midi <= min(PIANO_HIGH, self.high + margin)

    def bounds(self, margin: int = RANGE_MARGIN) -> tuple[int, int]:
        """(lowest, highest) allowed MIDI note with `margin`."""
        return max(PIANO_LOW, self.low - margin), min(PIANO_HIGH, self.high + margin)


def _i(name: str, family: str, program: int, sound: str, low: int, high: int, clef: str = "treble") -> Instrument:
    return Instrument(name, family, program, sound, low, high, clef)


# Name keyword (a word start in the part name, lower case; also common Italian/German/French names) → instrument.
# Checked in order, so that specific names come first ("double bass" before "bass", "english horn" before "horn").
INSTRUMENTS: tuple[tuple[tuple[str, ...], Instrument], ...] = (
    (("harpsichord", "cembalo", "clavecin"), _i("Harpsichord", "keyboard", 6, "keyboard.harpsichord", 29, 89)),
    (("clavichord",), _i("Clavichord", "keyboard", 7, "keyboard.clavichord", 36, 89)),
    (("celesta",), _i("Celesta", "keyboard", 8, "keyboard.celesta", 60, 108)),
    (("organ", "orgel", "organo"), _i("Organ", "keyboard", 19, "keyboard.organ.pipe", 24, 96)),
    (("harmonium",), _i("Harmonium", "keyboard", 20, "keyboard.harmonium", 29, 89)),
    (("accordion",), _i("Accordion", "keyboard", 21, "keyboard.accordion", 41, 93)),
    (("piano", "klavier", "pianoforte", "fortepiano", "keyboard", "pf.", "pno"),
     _i("Piano", "keyboard", 0, "keyboard.piano", 21, 108)),
    (("guitar", "gitarre", "chitarra"), _i("Guitar", "plucked", 24, "pluck.guitar", 52, 95)),
    (("lute", "laute", "liuto", "theorbo"), _i("Lute", "plucked", 24, "pluck.lute", 36, 79)),
    (("mandolin",), _i("Mandolin", "plucked", 25, "pluck.mandolin", 55, 88)),
    (("harp", "arpa", "harfe"), _i("Harp", "plucked", 46, "pluck.harp", 24, 103)),
    (("contrabass", "double bass", "doublebass", "kontrabass", "violone", "contrabasso", "bass viol"),
     _i("Contrabass", "strings", 43, "strings.contrabass", 28, 67, "bass")),
    (("violoncello", "cello", "vc.", "vlc"), _i("Violoncello", "strings", 42, "strings.cello", 36, 84, "bass")),
    (("viola", "bratsche", "alto viol", "vla", "va."), _i("Viola", "strings", 41, "strings.viola", 48, 88, "alto")),
    (("violin", "violino", "violine", "geige", "fiddle", "vln", "vl.", "vn."),
     _i("Violin", "strings", 40, "strings.violin", 55, 103)),
    (("strings",), _i("Strings", "strings", 48, "strings.group", 28, 103)),
    (("timpani", "pauken", "timbales"), _i("Timpani", "percussion", 47, "drum.timpani", 38, 60, "bass")),
    (("piccolo", "ottavino"), _i("Piccolo", "woodwind", 72, "wind.flutes.flute.piccolo", 62, 96)),
    (("fife",), _i("Fife", "woodwind", 72, "wind.flutes.fife", 59, 98)),
    (("flute", "flauto", "flote", "traverso", "fl."), _i("Flute", "woodwind", 73, "wind.flutes.flute", 59, 98)),
    (("recorder", "blockflote", "flauto dolce"), _i("Recorder", "woodwind", 74, "wind.flutes.recorder", 60, 93)),
    (("english horn", "cor anglais", "corno inglese"), _i("English Horn", "woodwind", 69, "wind.reed.english-horn",
                                                           52, 84)),
    (("oboe", "hautbois", "oboe d'amore", "ob."), _i("Oboe", "woodwind", 68, "wind.reed.oboe", 58, 93)),
    (("bassoon", "fagott", "fagotto", "basson"), _i("Bassoon", "woodwind", 70, "wind.reed.bassoon", 34, 76, "bass")),
    (("clarinet", "clarinetto", "klarinette", "cl."), _i("Clarinet", "woodwind", 71, "wind.reed.clarinet", 52, 96)),
    (("saxophone", "sax"), _i("Saxophone", "woodwind", 65, "wind.reed.saxophone", 56, 93)),
    (("horn", "corno", "cor ", "cor."), _i("Horn", "brass", 60, "brass.french-horn", 41, 84)),
    (("trumpet", "tromba", "trompete", "trompette", "clarino"), _i("Trumpet", "brass", 56, "brass.trumpet", 54, 86)),
    (("trombone", "posaune"), _i("Trombone", "brass", 57, "brass.trombone", 40, 77, "bass")),
    (("tuba",), _i("Tuba", "brass", 58, "brass.tuba", 26, 65, "bass")),
    (("soprano", "sopran", "canto", "treble voice", "discant", "cantus"),
     _i("Soprano", "voice", 52, "voice.soprano", 60, 81)),
    (("mezzo",), _i("Mezzo-soprano", "voice", 52, "voice.mezzo-soprano", 57, 79)),
    (("alto", "alt", "contralto", "altus"), _i("Alto", "voice", 52, "voice.alto", 53, 74)),
    (("tenor", "tenore", "tenorino"), _i("Tenor", "voice", 52, "voice.tenor", 48, 69)),
    (("baritone", "bariton"), _i("Baritone", "voice", 52, "voice.baritone", 45, 65, "bass")),
    (("bass", "basso", "bassus", "basse"), _i("Bass", "voice", 52, "voice.bass", 38, 62, "bass")),
    (("voice", "voce", "singstimme", "gesang", "stimme", "chant", "vocal", "solo"),
     _i("Voice", "voice", 53, "voice.vocals", 45, 84)),
    (("choir", "chorus", "chor", "coro"), _i("Choir", "voice", 52, "voice.choir", 40, 81)),
)

# Parts whose name says nothing: decided by their clef, as a notation program would show them.
BY_CLEF: dict[str, Instrument] = {
    "treble": _i("Treble part", "other", 0, "keyboard.piano", 43, 103),
    "bass": _i("Bass part", "other", 0, "keyboard.piano", 21, 72, "bass"),
    "alto": _i("Alto-clef part", "other", 41, "strings.viola", 43, 88, "alto"),
    "tenor": _i("Tenor-clef part", "other", 42, "strings.cello", 36, 81, "tenor"),
    "percussion": _i("Percussion", "percussion", 0, "drum.group.set", PIANO_LOW, PIANO_HIGH, "percussion"),
}
CONTINUO = next(instrument for _, instrument in INSTRUMENTS if instrument.name == "Violoncello")
UNKNOWN = _i("Unknown", "other", 0, "keyboard.piano", PIANO_LOW, PIANO_HIGH)

_PATTERNS = [(re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(k) for k in keys) + ")"), instrument)
             for keys, instrument in INSTRUMENTS]
_CLEF_WORD = re.compile(r"\b(?:clef\s*=\s*)?(treble|bass|alto|tenor|perc|percussion)\d*\b")
_NAME_FIELD = re.compile(r'\b(nm|name|snm|subname)\s*=\s*"([^"]*)"')


def by_name(name: str) -> Instrument | None:
    """The instrument a part name names (`"Violin I"` → Violin), or None when no keyword matches.

    Keywords are tried in table order, so `Violoncello` is a cello, `Double Bass` a contrabass and `Corno inglese`
    an English horn. A continuo line ("Basso continuo") is played by cello and keyboard, not sung. ABC's line-break
    escape in a name (`nm="Chant\\nVoice"`, two lines on the page) separates words.
    """
    lowered = name.replace("\\n", " ").lower().strip()
    if not lowered:
        return None
    if "continuo" in lowered:
        return CONTINUO
    for pattern, instrument in _PATTERNS:
        if pattern.search(lowered):
            return instrument
    return None


def clef_of(definition: str) -> str | None:
    """The clef named in an ABC voice definition (`V:2 bass nm="…"` → `bass`); None when none is named."""
    text = _NAME_FIELD.sub(" ", definition)
    match = _CLEF_WORD.search(text.lower())
    if not match:
        return None
    clef = match.group(1)
    return "percussion" if clef.startswith("perc") else clef


def octave_shift(definition: str) -> int:
    """Semitones between written and sounding pitch that an ABC voice definition's clef states: `treble-8` (a
    tenor written an octave up) → -12, `treble+8` → +12, otherwise 0."""
    match = re.search(r"\b(?:treble|bass|alto|tenor)([+-])8\b", _NAME_FIELD.sub(" ", definition))
    return 0 if not match else (12 if match.group(1) == "+" else -12)


def part_names(definition: str) -> list[str]:
    """The `nm="…"` and `snm="…"` names of an ABC voice definition, long name first."""
    names = {key: value for key, value in _NAME_FIELD.findall(definition)}
    return [names[key] for key in ("nm", "name", "snm", "subname") if names.get(key)]


def identify(name: str = "", clef: str | None = None) -> Instrument:
    """The instrument of a part from its name (first) or its clef; `UNKNOWN` (the piano's range) otherwise."""
    found = by_name(name)
    if found is not None:
        return found
    if clef in BY_CLEF:
        return BY_CLEF[clef]
    return UNKNOWN


def identify_part(name: str = "", clefs: list[str | None] | tuple[str | None, ...] = ()) -> Instrument:
    """The instrument of a score part from its name, else from its staves: an unnamed part of two or more staves
    is a grand staff, played by a keyboard (the piano); one staff is decided by its clef (see `identify`)."""
    found = by_name(name)
    if found is not None:
        return found
    if len(clefs) >= 2:
        return next(instrument for _, instrument in INSTRUMENTS if instrument.name == "Piano")
    return identify("", clefs[0] if clefs else None)


def identify_voice(definition: str) -> Instrument:
    """The instrument of an ABC voice definition line (`V:1 treble nm="Soprano" snm="S."`)."""
    for name in part_names(definition):
        found = by_name(name)
        if found is not None:
            return found
    return identify("", clef_of(definition) or "treble")


def brace_groups(score_line: str) -> list[list[str]]:
    """Voice ids of each `{ … }` group of a `%%score` line: the staves of one instrument (a piano's two hands)."""
    return [re.findall(r"[A-Za-z0-9_]+", group) for group in re.findall(r"\{([^}]*)\}", score_line)]


def score_staves(header: list[str]) -> list[list[str]]:
    """The voice ids of each staff, top to bottom, as `%%score` lays them out: a `( … )` group is one staff, any
    other voice id a staff of its own (`%%score [ ( 1 2 ) | 3 ]` → [["1", "2"], ["3"]]); [] without `%%score`."""
    line = next((x for x in header if x.startswith("%%score")), None)
    if line is None:
        return []
    staves: list[list[str]] = []
    group: list[str] | None = None
    for token in re.findall(r"[A-Za-z0-9_]+|[()]", line[len("%%score"):]):
        if token == "(":
            group = []
        elif token == ")":
            if group:
                staves.append(group)
            group = None
        elif group is not None:
            group.append(token)
        else:
            staves.append([token])
    return staves


def voice_instruments(header: list[str]) -> dict[str, Instrument]:
    """The instrument of every voice defined in an ABC header.

    A voice is known by its names, else by the named voice of its `%%score` brace group (the unnamed left hand of
    `%%score { 1 | ( 2 3 ) }` with `V:1 nm="Piano"` is the piano too), else by its clef.
    """
    definitions = {}
    for line in header:
        match = re.match(r"V:\s*(\S+)(.*)$", line)
        if match:
            definitions[match.group(1)] = line
    named = {vid: by_name(name) for vid, line in definitions.items() for name in part_names(line)[:1]}
    for line in header:
        if line.startswith("%%score"):
            for group in brace_groups(line):
                owner = next((named[vid] for vid in group if named.get(vid)), None)
                for vid in group:
                    if owner is not None and named.get(vid) is None:
                        named[vid] = owner
    return {vid: named.get(vid) or identify_voice(line) for vid, line in definitions.items()}


def gm_program(part_name: str) -> int:
    """General MIDI program (0-based) for a part name; piano when nothing matches."""
    found = by_name(part_name)
    return found.program if found is not None else 0


# Clefs a part of an instrument may start in besides its usual one (`Instrument.clef`): cello passages in tenor
# clef, tenor voices in treble (sounding an octave lower), bass or tenor clef, keyboard staves in either clef.
# The viola has none: a viola written in treble clef from its first bar is not how a quartet is notated.
OTHER_CLEFS: dict[str, tuple[str, ...]] = {
    "Violoncello": ("tenor",),
    "Contrabass": ("tenor",),
    "Bassoon": ("tenor",),
    "Trombone": ("tenor", "alto"),
    "Soprano": ("soprano",),
    "Mezzo-soprano": ("soprano",),
    "Alto": ("alto",),
    "Tenor": ("tenor", "bass"),
    "Baritone": ("treble",),
    "Voice": ("bass", "soprano", "alto", "tenor"),
    "Choir": ("bass", "alto", "tenor"),
}
ANY_CLEF_FAMILIES = ("keyboard", "plucked", "percussion", "other")


def clef_fits(instrument: Instrument, clef: str | None) -> bool:
    """True when a part of `instrument` may start in `clef` (its usual clef or one of OTHER_CLEFS); keyboard,
    plucked, percussion and unidentified parts fit any clef, and a part with no clef is taken as treble."""
    if instrument.family in ANY_CLEF_FAMILIES:
        return True
    clef = clef or "treble"
    return clef == instrument.clef or clef in OTHER_CLEFS.get(instrument.name, ())


# --- Ensembles: what an instrumentation label of the prompt means -----------------------------------------------

MELODIC_FAMILIES = ("strings", "woodwind", "brass", "plucked")


@dataclass(frozen=True)
class Ensemble:
    """One kind of ensemble, as the multiset of its parts' instruments (a keyboard instrument counts once however
    many staves it has), or as a rule on families when `parts` is empty."""

    name: str
    parts: tuple[str, ...] = ()
    """Canonical instrument names (`Instrument.name`), one per part, in any order."""
    min_parts: int = 0
    max_parts: int = 0
    families: tuple[str, ...] = ()
    """Families every part must belong to (family rules only)."""
    needs: tuple[str, ...] = ()
    """Families that must each appear at least once (family rules only)."""

    def matches(self, instruments: list[Instrument]) -> bool:
        if self.parts:
            return sorted(i.name for i in instruments) == sorted(self.parts)
        if not self.min_parts <= len(instruments) <= (self.max_parts or len(instruments)):
            return False
        present = {i.family for i in instruments}
        return (not self.families or present <= set(self.families)) and all(f in present for f in self.needs)


VOICE_NAMES = ("Soprano", "Mezzo-soprano", "Alto", "Tenor", "Baritone", "Bass", "Voice")

# Instrumentation label (the third prompt line) → the ensembles that fit it, the usual one first. Labels are the
# instrumentation categories of NotaGen's fine-tuning data; a label not listed here has no fit to judge.
ENSEMBLES: dict[str, tuple[Ensemble, ...]] = {
    "Choral": (
        Ensemble("SATB choir", ("Soprano", "Alto", "Tenor", "Bass")),
        Ensemble("voices", min_parts=2, max_parts=12, families=("voice",)),
        Ensemble("choir and instruments", min_parts=3, needs=("voice",),
                 families=("voice", "strings", "woodwind", "brass", "keyboard", "percussion")),
    ),
    "Chamber": (
        Ensemble("string quartet", ("Violin", "Violin", "Viola", "Violoncello")),
        Ensemble("string trio", ("Violin", "Viola", "Violoncello")),
        Ensemble("string quintet", ("Violin", "Violin", "Viola", "Viola", "Violoncello")),
        Ensemble("string quintet with two cellos", ("Violin", "Violin", "Viola", "Violoncello", "Violoncello")),
        Ensemble("piano trio", ("Violin", "Violoncello", "Piano")),
        Ensemble("piano quartet", ("Violin", "Viola", "Violoncello", "Piano")),
        Ensemble("piano quintet", ("Violin", "Violin", "Viola", "Violoncello", "Piano")),
        Ensemble("duo with keyboard", min_parts=2, max_parts=2, families=MELODIC_FAMILIES + ("keyboard",),
                 needs=("keyboard",)),
        Ensemble("other chamber ensemble", min_parts=2, max_parts=9,
                 families=MELODIC_FAMILIES + ("keyboard",)),
    ),
    "Art Song": tuple(Ensemble(f"{voice.lower()} and piano", (voice, "Piano")) for voice in VOICE_NAMES),
    "Keyboard": (
        Ensemble("piano", ("Piano",)),
        Ensemble("keyboard", min_parts=1, max_parts=2, families=("keyboard",)),
    ),
    "Orchestral": (
        Ensemble("orchestra", min_parts=5, families=("strings", "woodwind", "brass", "keyboard", "percussion",
                                                     "plucked"), needs=("strings",)),
    ),
    "Vocal-Orchestral": (
        Ensemble("voices and orchestra", min_parts=4, needs=("voice", "strings")),
    ),
    "Band": (
        Ensemble("band", min_parts=4, families=("woodwind", "brass", "percussion", "strings", "keyboard"),
                 needs=("brass",)),
    ),
}


def match_ensemble(instrumentation: str, instruments: list[Instrument]) -> Ensemble | None:
    """The first ensemble of the label that the parts' instruments form; None when none does (or the label has no
    ensembles in ENSEMBLES)."""
    for ensemble in ENSEMBLES.get(instrumentation, ()):
        if ensemble.matches(instruments):
            return ensemble
    return None


def name_ensemble(instruments: list[Instrument]) -> str:
    """A short name of what the parts form, for reports: the first ensemble of any label that matches, else the
    instrument names joined by `+` (`Soprano + Alto + Treble part`)."""
    for ensembles in ENSEMBLES.values():
        for ensemble in ensembles:
            if ensemble.parts and ensemble.matches(instruments):
                return ensemble.name
    return " + ".join(i.name for i in instruments) or "no parts"
