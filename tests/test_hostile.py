"""Hostile input: a malformed corpus (made by `hostile_corpus`) through convert, check, data build and the studio,
each refused in one line naming the limit or the fault, and a hostile client against a running studio."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostile_corpus import CLI_FLAGS, GOOD_ABC, TEST_LIMITS, make_corpus

from notagen.abc.check import check_command
from notagen.convert import convert_command
from notagen.errors import InputError, NotaGenError
from notagen.io import remove_stale_temporaries
from notagen.limits import Cancelled, LimitError, Limits, run_limited, scan_abc, scan_musicxml

ABC_FLAGS = {k: v for k, v in CLI_FLAGS.items() if k != "max_unpacked_mb"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, make_corpus(folder)


def _one_line_refusal(error: NotaGenError, expected: str) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert expected in message, message


# -- the worker process ---------------------------------------------------------------------------------------

def _allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _raise_input_error(message: str) -> None:
    raise InputError(message)


def test_run_limited_returns_raises_and_stops_at_its_limits():
    assert run_limited(_allocate, 10, limits=Limits(max_memory_mb=2048)) == 10 * 2**20
    with pytest.raises(InputError, match="^bad thing$"):
        run_limited(_raise_input_error, "bad thing")
    with pytest.raises(LimitError, match=r"x: conversion stopped at the 1024 MB memory limit \(--max-memory-mb\)"):
        run_limited(_allocate, 3000, limits=Limits(max_memory_mb=1024), name="x")
    started = time.monotonic()
    with pytest.raises(LimitError, match=r"y: conversion stopped after the 0.5 s time limit \(--max-seconds\)"):
        run_limited(_sleep, 30, limits=Limits(max_seconds=0.5), name="y")
    assert time.monotonic() - started < 5
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_limited(_sleep, 30, cancel=cancel)
    assert time.monotonic() - started < 3


def test_scans_judge_only_the_bounds():
    scan_abc(GOOD_ABC, "good")
    with pytest.raises(LimitError, match="voices"):
        scan_abc("X:1\nK:C\n" + "".join(f"[V:{i}]C|\n" for i in range(10)), "v", Limits(max_voices=4))
    with pytest.raises(LimitError, match="a bar of 9 notes"):
        scan_abc("X:1\nK:C\n" + "CDEFGABcd|\n", "n", Limits(max_notes_per_bar=8))
    scan_abc('X:1\nK:C\n"CDEFGABcdefg" !trill! C|\n', "text and decorations hold no notes",
             Limits(max_notes_per_bar=8))
    xml = b"<score-partwise><part id='P1'><measure number='1'>" + b"<note><duration>4</duration></note>" * 9 + \
        b"</measure></part></score-partwise>"
    scan_musicxml(xml, "ok")
    with pytest.raises(LimitError, match="over 8 notes in bar 1 of part P1"):
        scan_musicxml(xml, "n", Limits(max_notes_per_bar=8))
    scan_musicxml(b"<not-closed>", "malformed XML is the parser's to report")


# -- the corpus through every command -------------------------------------------------------------------------

def test_convert_refuses_each_hostile_file_in_one_line(corpus, tmp_path, capsys):
    folder, expected = corpus
    for name, outcome in expected.items():
        output = tmp_path / f"{name}.abc"
        started = time.monotonic()
        if outcome == "ok":
            assert convert_command(folder / name, output, **CLI_FLAGS) == 0, name
            assert output.is_file() and "K:" in output.read_text()
        else:
            with pytest.raises(NotaGenError) as error:
                convert_command(folder / name, output, **CLI_FLAGS)
            _one_line_refusal(error.value, outcome)
            assert not output.exists()
        assert time.monotonic() - started < 30, name


def test_check_refuses_each_hostile_abc_file_and_reads_utf16(corpus, capsys):
    folder, expected = corpus
    for name, outcome in expected.items():
        if not name.endswith(".abc") or name == "a_copy_of_good.abc":
            continue
        if outcome == "ok":
            assert check_command(folder / name, **ABC_FLAGS) == 0, name
            assert "valid" in capsys.readouterr().out
        elif name == "junk.abc":
            assert check_command(folder / name, **ABC_FLAGS) == 1   # read, judged invalid, within the limits
        else:
            with pytest.raises(NotaGenError) as error:
                check_command(folder / name, **ABC_FLAGS)
            _one_line_refusal(error.value, outcome)


def test_check_handles_multi_tune_files_like_convert(tmp_path, capsys):
    tunes = tmp_path / "tunes.abc"
    tunes.write_text(GOOD_ABC + "\n" + GOOD_ABC.replace("X:1", "X:2").replace("A4|]", "A3|]"))
    with pytest.raises(InputError, match="holds 2 tunes; pick one with --tune"):
        check_command(tunes)
    assert check_command(tunes, tune=1) == 0
    assert check_command(tunes, tune=2) == 1   # its last bar is short
    with pytest.raises(InputError, match="tune 3 out of range"):
        check_command(tunes, tune=3)


def test_data_build_reports_every_hostile_input_and_builds_every_good_one(corpus, tmp_path):
    from notagen.data.build import build_dataset

    folder, expected = corpus
    messages: list[str] = []
    summary = build_dataset([folder], tmp_path / "dataset", workers=1, progress=False, log=messages.append,
                            limits=TEST_LIMITS, timeout=60)
    records = [json.loads(line) for line in (tmp_path / "dataset" / "index.jsonl").read_text().splitlines()]
    built = {Path(r["source"]).name for r in records}
    report = json.loads((tmp_path / "dataset" / "report.json").read_text())
    listed = {Path(item["source"]).name: item for item in report["failures"] + report["excluded"]}
    good = {name for name, outcome in expected.items() if outcome == "ok"}
    # Every good file builds (UTF-16 ones too), and the copy of good.musicxml with the wrong extension, which
    # sorts first and fails, does not hide it.
    assert built == good and summary.built == len(good) == 4
    assert listed["a_copy_of_good.abc"]["kind"] == "parse error"
    for name, outcome in expected.items():
        if outcome != "ok":
            assert name in listed, f"{name} is not in the report"
            assert listed[name]["reason"] and "\n" not in listed[name]["reason"]
    assert listed["again"]["reason"] == "link to a folder, not followed"
    assert listed["score.mid"]["kind"] == "excluded" and "MIDI" in listed["score.mid"]["reason"]
    assert "unpacked-size limit" in listed["zipbomb.mxl"]["reason"]
    assert "--max-notes-per-bar" in listed["huge_bar.abc"]["reason"]
    assert "quarter notes" in listed["long_note.abc"]["reason"]


def test_build_workers_die_with_the_build(tmp_path):
    """kill -9 the parent of a pool: its workers go too (PDEATHSIG through the fork server)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = (
        "import sys, time\n"
        "from notagen.data.build import BuildOptions, _run_pool\n"
        "from notagen.data.sources import Job\n"
        "from worker_helpers import record_pid_and_sleep\n"
        "if __name__ == '__main__':\n"
        f"    jobs = [Job(f's{{i}}', '{pids}', 'r', 'c', 'l', 'abc', str(i), f'p{{i}}') for i in range(2)]\n"
        "    for _ in _run_pool(jobs, BuildOptions(timeout=600), workers=2, worker=record_pid_and_sleep):\n"
        "        pass\n")
    (tmp_path / "worker_helpers.py").write_text(
        "import os, time\nfrom pathlib import Path\n\n\n"
        "def record_pid_and_sleep(job, options):\n"
        "    (Path(job.path) / str(os.getpid())).write_text('')\n"
        "    time.sleep(600)\n")
    (tmp_path / "run.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path.cwd())])}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_stale_temporaries_are_removed_and_an_orphaned_old_folder_restored(tmp_path):
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / ".a.json.x1y2.tmp").write_text("cut short")
    (tmp_path / ".train_state.pt.abc.tmp").write_text("cut short")
    (tmp_path / "keep.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".last.partial").mkdir()
    (tmp_path / "checkpoints" / ".best.old").mkdir()       # a kill between the renames: the only copy of best
    (tmp_path / "checkpoints" / ".best.old" / "model.safetensors").write_text("weights")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".a.json.x1y2.tmp", ".last.partial", ".train_state.pt.abc.tmp"]
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").read_text() == "weights"
    assert (tmp_path / "keep.json").is_file()


# -- the studio ---------------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_serve_api import (  # noqa: E402
    job_request,
    random_checkpoint,  # noqa: F401 - a fixture
    running_server,
    studio_client,
    upload,
)

from notagen.serve.app import STUDIO_HEADER, create_app  # noqa: E402


def test_studio_refuses_each_hostile_upload_with_a_4xx(corpus, random_checkpoint, tmp_path):  # noqa: F811
    folder, expected = corpus
    app = create_app(random_checkpoint, tmp_path / "out", device="cpu", limits=TEST_LIMITS)
    with studio_client(app) as client:
        for name, outcome in expected.items():
            response = upload(client, name, (folder / name).read_bytes())
            if outcome == "ok":
                assert response.status_code == 202, (name, response.text)
            else:
                assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail and str(tmp_path) not in detail, detail


def test_studio_refuses_cross_site_foreign_hosts_and_malformed_bodies(random_checkpoint, tmp_path):  # noqa: F811
    app = create_app(random_checkpoint, tmp_path / "out", device="cpu", allowed_hosts=["127.0.0.1", "studio.lan"])
    with fastapi.testclient.TestClient(app, base_url="http://127.0.0.1") as client:
        body = json.dumps(job_request())
        # A page on another site can send a "simple" POST (text/plain, a form) without asking first: refused.
        simple = client.post("/api/jobs", content=body, headers={"content-type": "text/plain",
                                                                 "origin": "http://evil.example"})
        assert simple.status_code == 403
        form = client.post("/api/jobs", data={"request": body}, headers={"origin": "http://evil.example"})
        assert form.status_code == 403
        assert client.post("/api/jobs", content=body, headers={"content-type": "text/plain"}).status_code == 403
        # JSON with a foreign Origin (a preflight would have failed, but never trust that): refused too.
        assert client.post("/api/jobs", json=job_request(), headers={"origin": "http://evil.example"}
                           ).status_code == 403
        assert client.post("/api/jobs", json=job_request(), headers={"origin": "http://127.0.0.1"}).status_code == 202
        # DNS rebinding: the name in Host is not ours.
        foreign = client.get("/api/health", headers={"host": "evil.example"})
        assert foreign.status_code == 421 and "not served here" in foreign.json()["detail"]
        assert client.get("/api/health", headers={"host": "studio.lan:7860"}).status_code == 200
        # Malformed and wrongly typed bodies: 4xx, never 500.
        nested = client.post("/api/jobs", content=b"[" * 5000 + b"]" * 5000,
                             headers={"content-type": "application/json"})
        assert nested.status_code == 400 and "nested too deeply" in nested.json()["detail"]
        assert client.post("/api/jobs", json=job_request(n=True)).status_code == 422
        assert client.post("/api/jobs", json=job_request(seed="3")).status_code == 422
        too_big = client.post("/api/jobs", content=b" " * 200_000, headers={"content-type": "application/json"})
        assert too_big.status_code == 413   # announced by Content-Length
        assert client.post(f"/api/jobs/{'0' * 16}/cancel").status_code == 403   # no JSON, no studio header
        assert client.post(f"/api/jobs/{'0' * 16}/cancel", headers={STUDIO_HEADER: "1"}).status_code == 404


def _health_latencies(base: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=5) as http:
        while not stop.is_set():
            started = time.monotonic()
            assert http.get("/api/health").status_code == 200
            out.append(time.monotonic() - started)
            time.sleep(0.05)


def test_hostile_client_against_a_running_studio(corpus, random_checkpoint, tmp_path):  # noqa: F811
    folder, _ = corpus
    app = create_app(random_checkpoint, tmp_path / "out", device="cpu", limits=TEST_LIMITS)
    with running_server(app) as base:
        latencies: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_health_latencies, args=(base, stop, latencies))
        watcher.start()
        try:
            with httpx.Client(base_url=base, timeout=30, headers={STUDIO_HEADER: "1"}) as http:
                for name in ("zipbomb.mxl", "entities.musicxml", "voices.abc", "junk.abc"):
                    response = http.post("/api/jobs", data={"request": json.dumps(job_request())},
                                         files={"file": (name, (folder / name).read_bytes())})
                    assert 400 <= response.status_code < 500, (name, response.text)
                bomb = http.post("/api/jobs", data={"request": json.dumps(job_request())},
                                 files={"file": ("zipbomb.mxl", (folder / "zipbomb.mxl").read_bytes())})
                assert bomb.status_code == 413 and "unpacked-size limit" in bomb.json()["detail"]
                # A cross-origin simple POST, as any web page the user visits could send it.
                evil = httpx.post(f"{base}/api/jobs", content=json.dumps(job_request()),
                                  headers={"content-type": "text/plain", "origin": "http://evil.example"})
                assert evil.status_code == 403
                assert http.get("/api/health", headers={"host": "evil.example:80"}).status_code == 421

                def chunks():
                    for _ in range(200):
                        yield b" " * 65536   # 12.5 MB, no Content-Length: chunked

                chunked = http.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
                assert chunked.status_code == 413
            assert _raw_chunked_status(base) == 413
        finally:
            stop.set()
            watcher.join(10)
        assert latencies and max(latencies) < 1.0, f"health answered in up to {max(latencies):.2f} s"


def _raw_chunked_status(base: str) -> int:
    """A chunked body sent by hand (no Content-Length at all), far past the bound: the status line."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        try:
            for _ in range(400):
                connection.sendall(chunk)
        except OSError:
            pass   # the server answered and closed while we were still sending
        reply = connection.recv(4096)
    return int(reply.split(b" ", 2)[1])
