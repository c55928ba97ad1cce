"""MusicXML → score pages (SVG, PNG), MIDI and audio (WAV), all offline.

* SVG pages and MIDI come from verovio (never fed multi-voice ABC: it cannot read it).
* PNG pages from each SVG via `rsvg-convert` (Debian librsvg2-bin), else cairosvg if installed.
* WAV from the MIDI via the fluidsynth command line (`-ni -g 0.8 -r 44100 -F`; the default gain 0.2 is too quiet)
  and a General MIDI soundfont found on disk. Missing tools skip that format with a warning, never a crash.
* Every part carries its instrument (`set_instruments`: name, MusicXML sound, General MIDI program, from the part's
  name or clef), so the MIDI, the audio and notation programs all play the instrumentation.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from notagen.errors import ConversionError
from notagen.formats import FILES, RENDER_FORMATS, check_formats
from notagen.io import atomic_path, atomic_write_bytes, atomic_write_text

SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/local/share/soundfonts",
                  "/usr/share/sounds/sf3", "~/.local/share/soundfonts", "/opt/homebrew/share/soundfonts")
SOUNDFONT_PREFERENCE = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2", "GeneralUser.sf2")
PNG_WIDTH = 1200


@dataclass
class RenderResult:
    """Files written per format and the formats skipped (with the reason)."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)
    """Part id → General MIDI program (0-based) used for MIDI/WAV."""


_CLEF_SIGNS = {"G": "treble", "F": "bass", "C": "alto", "percussion": "percussion"}


def set_instruments(musicxml: str) -> tuple[str, dict[str, int]]:
    """Give every part its instrument, and keep key signatures within 7 sharps or flats.

    Each `<score-part>` gets a `<score-instrument>` (name and MusicXML standard sound, e.g. `strings.viola`) and a
    `<midi-instrument>` (its own channel, the General MIDI program), from the part's name or else its clef
    (`notagen.instruments`), so notation programs and our MIDI play the same sound. A `<fifths>` beyond ±7 is
    written as its enharmonic signature: notes carry their own pitch in MusicXML, so only the display changes,
    and MIDI files may then hold the key (they cannot store more than 7). Returns the text and part id → program.
    """
    from notagen.instruments import identify

    try:
        root = ET.fromstring(musicxml.encode("utf-8") if musicxml.lstrip().startswith("<?xml") else musicxml)
    except ET.ParseError as error:
        raise ConversionError(f"MusicXML is not well-formed: {error}") from error
    clefs = {part.get("id"): _CLEF_SIGNS.get(part.findtext(".//clef/sign") or "G", "treble")
             for part in root.iter("part")}
    programs: dict[str, int] = {}
    channel = 0
    for part in root.iter("score-part"):
        part_id = part.get("id", f"P{len(programs) + 1}")
        name = part.findtext("part-name") or ""
        instrument = identify(name, clefs.get(part_id))
        programs[part_id] = instrument.program
        channel += 1
        if channel == 10:  # channel 10 is percussion in General MIDI
            channel += 1
        instrument_id = f"{part_id}-I1"
        for old in part.findall("midi-instrument") + part.findall("score-instrument") + part.findall("midi-device"):
            part.remove(old)
        score_instrument = ET.SubElement(part, "score-instrument", id=instrument_id)
        ET.SubElement(score_instrument, "instrument-name").text = name or instrument.name
        ET.SubElement(score_instrument, "instrument-sound").text = instrument.sound
        midi = ET.SubElement(part, "midi-instrument", id=instrument_id)
        ET.SubElement(midi, "midi-channel").text = str((channel - 1) % 16 + 1)
        ET.SubElement(midi, "midi-program").text = str(instrument.program + 1)  # MusicXML counts from 1
    # score-part children have a fixed order: part-name … score-instrument, midi-device, midi-instrument.
    for part in root.iter("score-part"):
        children = list(part)
        order = {"score-instrument": 1, "midi-device": 2, "midi-instrument": 3}
        children.sort(key=lambda child: order.get(child.tag, 0))
        for child in list(part):
            part.remove(child)
        part.extend(children)
    for fifths in root.iter("fifths"):
        value = int(fifths.text or 0)
        if abs(value) > 7:
            fifths.text = str(value - 12 if value > 0 else value + 12)
    text = ET.tostring(root, encoding="unicode")
    doctype = re.search(r"<!DOCTYPE[^>]*>", musicxml)
    header = "<?xml version='1.0' encoding='utf-8'?>\n" + (doctype.group(0) + "\n" if doctype else "")
    return header + text, programs


def _toolkit():
    from importlib.resources import files

    import verovio

    toolkit = verovio.toolkit()
    # verovio 6 finds its fonts by itself only in the first thread that makes a toolkit; in any other thread
    # (the studio's workers) loadData fails with "Bravura font could not be loaded" unless told where they are.
    toolkit.setResourcePath(str(files("verovio") / "data"))
    toolkit.setOptions({"scale": 40, "pageWidth": 2100, "pageHeight": 2970, "adjustPageHeight": True,
                        "footer": "none", "breaks": "auto"})
    return toolkit


def _load(toolkit, musicxml: str) -> None:
    if not toolkit.loadData(musicxml):
        raise ConversionError("verovio could not read the MusicXML")


def render_svg_pages(musicxml: str) -> list[str]:
    """One SVG document per page."""
    toolkit = _toolkit()
    _load(toolkit, musicxml)
    return [toolkit.renderToSVG(page) for page in range(1, toolkit.getPageCount() + 1)]


def render_midi(musicxml: str) -> bytes:
    """Standard MIDI file bytes (instruments as set in the MusicXML score-parts)."""
    toolkit = _toolkit()
    _load(toolkit, musicxml)
    data = toolkit.renderToMIDI()
    if not data:
        raise ConversionError("verovio produced no MIDI")
    return base64.b64decode(data)


def svg_to_png(svg_path: Path, png_path: Path, width: int = PNG_WIDTH) -> str | None:
    """Rasterise one SVG page on a white background; None on success, else why not."""
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        try:
            with atomic_path(png_path) as tmp:
                result = subprocess.run([rsvg, "-w", str(width), "-b", "white", "-o", str(tmp), str(svg_path)],
                                        capture_output=True, text=True, timeout=120)
                if result.returncode != 0 or tmp.stat().st_size == 0:
                    raise ConversionError(f"rsvg-convert failed: {' '.join(result.stderr.split())[:200]}")
            return None
        except ConversionError as error:
            reason = str(error)
    else:
        reason = "rsvg-convert not found"
    try:
        import cairosvg
    except ImportError:
        return f"{reason}; cairosvg not installed"
    try:
        data = cairosvg.svg2png(url=str(svg_path), output_width=width, background_color="white")
    except (ValueError, OSError) as error:
        return f"{reason}; cairosvg failed: {error}"
    atomic_write_bytes(png_path, data)
    return None


def find_soundfont() -> Path | None:
    """A General MIDI soundfont on disk ($NOTAGEN_SOUNDFONT first), preferring the better-known ones."""
    env = os.environ.get("NOTAGEN_SOUNDFONT")
    if env and Path(env).is_file():
        return Path(env)
    found: list[Path] = []
    for directory in SOUNDFONT_DIRS:
        path = Path(directory).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in (".sf2", ".sf3") and p.is_file()))
    for preferred in SOUNDFONT_PREFERENCE:
        for path in found:
            if path.name == preferred:
                return path
    return found[0] if found else None


def midi_to_wav(midi_path: Path, wav_path: Path, soundfont: Path | None = None) -> str | None:
    """Synthesize with fluidsynth; None on success, else why the WAV was skipped."""
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        return "fluidsynth not found (install it, e.g. apt-get install --no-install-recommends fluidsynth)"
    soundfont = soundfont or find_soundfont()
    if soundfont is None:
        return "no General MIDI soundfont found (set NOTAGEN_SOUNDFONT or install timgm6mb-soundfont)"
    try:
        with atomic_path(wav_path, suffix=".tmp.wav") as tmp:  # fluidsynth picks the file type by extension
            command = [fluidsynth, "-ni", "-g", "0.8", "-r", "44100", "-F", str(tmp), str(soundfont), str(midi_path)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if result.returncode != 0 or tmp.stat().st_size <= 44:  # 44 bytes: a WAV header and no sound
                raise ConversionError(f"fluidsynth failed: {' '.join((result.stderr or result.stdout).split())[:200]}")
    except subprocess.TimeoutExpired:
        return "fluidsynth took longer than 10 minutes"
    except ConversionError as error:
        return str(error)
    return None


def render_score(musicxml: str, directory: Path, stem: str,
                 formats: tuple[str, ...] | list[str] = RENDER_FORMATS) -> RenderResult:
    """Write `stem`.svg/-N.svg, .png, .mid, .wav into `directory` (each file atomically) for the asked formats
    (`notagen.formats.RENDER_FORMATS`)."""
    formats = check_formats(formats, RENDER_FORMATS)
    directory.mkdir(parents=True, exist_ok=True)
    result = RenderResult()
    musicxml, result.programs = set_instruments(musicxml)

    svg_paths: list[Path] = []
    if "svg" in formats or "png" in formats:
        try:
            pages = render_svg_pages(musicxml)
        except ConversionError as error:
            for fmt in ("svg", "png"):
                if fmt in formats:
                    result.skipped[fmt] = str(error)
            pages = []
        for number, svg in enumerate(pages, start=1):
            suffix = FILES["svg"].suffix
            name = f"{stem}{suffix}" if len(pages) == 1 else f"{stem}-{number}{suffix}"
            svg_paths.append(atomic_write_text(directory / name, svg))
        if "svg" in formats and svg_paths:
            result.files["svg"] = list(svg_paths)
    if "png" in formats and svg_paths:
        pngs = []
        for svg_path in svg_paths:
            png_path = svg_path.with_suffix(FILES["png"].suffix)
            reason = svg_to_png(svg_path, png_path)
            if reason is not None:
                result.skipped["png"] = reason
                break
            pngs.append(png_path)
        if pngs and "png" not in result.skipped:
            result.files["png"] = pngs
    if "svg" not in formats:
        for svg_path in svg_paths:
            svg_path.unlink(missing_ok=True)

    if "midi" in formats or "wav" in formats:
        midi_path = directory / f"{stem}{FILES['midi'].suffix}"
        try:
            atomic_write_bytes(midi_path, render_midi(musicxml))
        except ConversionError as error:
            result.skipped["midi"] = str(error)
            if "wav" in formats:
                result.skipped["wav"] = f"no MIDI: {error}"
        else:
            if "midi" in formats:
                result.files["midi"] = [midi_path]
            if "wav" in formats:
                wav_path = directory / f"{stem}{FILES['wav'].suffix}"
                reason = midi_to_wav(midi_path, wav_path)
                if reason is None:
                    result.files["wav"] = [wav_path]
                else:
                    result.skipped["wav"] = reason
            if "midi" not in formats:
                midi_path.unlink(missing_ok=True)
    return result
