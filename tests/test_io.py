"""Atomic writes (files and folders) get normal file modes and leave nothing half-written; JSON-lines logs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from notagen.errors import InputError
from notagen.io import (
    append_jsonl,
    atomic_directory,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from notagen.train.core import load_state, save_state, trim_metrics


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _open_mode(tmp_path: Path) -> int:
    """The mode a plain open() gives a new file here (0666 less the umask)."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    return _mode(plain)


def test_atomic_files_get_the_mode_open_gives_not_0600(tmp_path):
    expected = _open_mode(tmp_path)
    assert expected != 0o600  # the test means something only under a umask that lets others read
    text = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert text.read_text() == "hello" and _mode(text) == expected
    assert _mode(atomic_write_json(tmp_path / "c.json", {"k": 1})) == expected
    with atomic_path(tmp_path / "d.wav", suffix=".tmp.wav") as tmp:
        assert tmp.name.startswith(".d.wav.") and tmp.name.endswith(".tmp.wav")
        tmp.write_bytes(b"RIFF")  # any writer: a library, a subprocess
    assert (tmp_path / "d.wav").read_bytes() == b"RIFF" and _mode(tmp_path / "d.wav") == expected
    save_state(tmp_path / "state.pt", {"step": 3, "weights": torch.ones(2)})
    assert _mode(tmp_path / "state.pt") == expected and load_state(tmp_path / "state.pt")["step"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = atomic_write_text(tmp_path / "kept.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["kept.txt"]


def test_atomic_directory_appears_whole_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "piece"
    with atomic_directory(target) as folder:
        (folder / "a.txt").write_text("1")
        assert not target.exists()  # not there until complete
    with atomic_directory(target) as folder:
        (folder / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError), atomic_directory(target) as folder:
        (folder / "c.txt").write_text("3")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"] and sorted(os.listdir(tmp_path)) == ["piece"]


def test_jsonl_skips_a_line_cut_short_unless_strict(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(log, {"step": step})
    with log.open("a") as handle:
        handle.write('{"step": 4, "lo')  # a kill in the middle of a line
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3]
    with pytest.raises(InputError, match="metrics.jsonl:4"):
        read_jsonl(log, strict=True)
    trim_metrics(log, 2)  # a resumed run drops what was logged after its saved step
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_state_of_another_version_or_unreadable_is_refused(tmp_path):
    torch.save({"version": 99}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="version 99"):
        load_state(tmp_path / "old.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 not a state")
    with pytest.raises(InputError, match="unreadable"):
        load_state(tmp_path / "cut.pt")
