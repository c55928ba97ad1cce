"""The studio's HTTP API with FastAPI's TestClient: health, models, prompts, the job lifecycle, continuation uploads,
cancelling, the queue limit, upload limits, path traversal, and the history surviving a restart.

Two tiny checkpoints: `random_checkpoint` (random weights: writes garbage, which must be reported as invalid) and
`stopping_checkpoint` (weights edited so that the model writes the end-of-piece patch at once: a continuation then
returns exactly the uploaded beginning, which is valid music and renders to score pages and audio).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from notagen.checkpoint import save_checkpoint  # noqa: E402
from notagen.config import BOS_ID, EOS_ID, ModelConfig  # noqa: E402
from notagen.convert import abc_to_musicxml  # noqa: E402
from notagen.errors import CheckpointError  # noqa: E402
from notagen.formats import OUTPUT_FORMATS  # noqa: E402
from notagen.generation.sampling import SamplingSettings  # noqa: E402
from notagen.io import content_hash  # noqa: E402
from notagen.model import NotaGenModel  # noqa: E402
from notagen.render import render_svg_pages  # noqa: E402
from notagen.serve.app import STUDIO_HEADER, create_app  # noqa: E402
from notagen.serve.jobs import HISTORY_FILE  # noqa: E402

REGISTRY = [
    {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral", "count": 5},
    {"period": "Romantic", "composer": "Chopin, Frederic", "instrumentation": "Keyboard", "count": 3},
    {"period": "Romantic", "composer": "Schumann, Robert", "instrumentation": "Keyboard", "count": 2},
]
CHOPIN = {"period": "Romantic", "composer": "Chopin, Frederic", "instrumentation": "Keyboard"}
# A two-part, two-bar beginning in standard ABC.
BEGINNING_ABC = """X:1
T:Beginning
M:4/4
L:1/4
K:G
V:1 treble nm="Violin"
V:2 bass nm="Cello"
V:1
G A B c | d2 B2 |]
V:2
G,, B,, D, G, | G,2 D,2 |]
"""


def random_model() -> NotaGenModel:
    torch.manual_seed(0)
    return NotaGenModel(ModelConfig.preset("tiny", patch_length=32))


def stopping_model() -> NotaGenModel:
    """A tiny model whose char decoder always writes the EOS patch (BOS, EOS): the piece ends where it starts.

    The blocks are made identities (zero output projections), and huge position embeddings point the hidden state
    of position 0 at BOS's embedding and of position 1 at EOS's, so the tied LM head picks BOS then EOS.
    """
    model = random_model()
    stack = model.char_level_decoder.base.transformer
    size = model.config.hidden_size
    toward_bos, toward_eos = torch.zeros(size), torch.zeros(size)
    toward_bos[0], toward_bos[1] = 1.0, -1.0
    toward_eos[2], toward_eos[3] = 1.0, -1.0
    with torch.no_grad():
        for block in stack.h:
            for layer in (block.attn.c_proj, block.mlp.c_proj):
                layer.weight.zero_()
                layer.bias.zero_()
        stack.wte.weight.mul_(0.01)
        stack.wte.weight[BOS_ID] = 10 * toward_bos
        stack.wte.weight[EOS_ID] = 10 * toward_eos
        stack.wpe.weight.zero_()
        stack.wpe.weight[0] = 1000 * toward_bos
        stack.wpe.weight[1] = 1000 * toward_eos
    return model


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "random", random_model(), prompts=REGISTRY)


@pytest.fixture(scope="module")
def stopping_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "stopping", stopping_model(), prompts=REGISTRY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def studio_client(app) -> TestClient:
    """A test client that talks as the studio's own page does: a loopback Host and the studio header."""
    return TestClient(app, base_url="http://127.0.0.1", headers={STUDIO_HEADER: "1"})


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_for_job(client, job_id: str, timeout: float = 30.0, until=("done", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in until:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout} s"
        time.sleep(0.05)


def job_request(**overrides) -> dict:
    request = {"prompt": CHOPIN, "sampling": {"temperature": 1.0, "top_k": 9, "top_p": 0.9}, "seed": 3, "n": 1,
               "max_bars": 2, "retries": 0}
    request.update(overrides)
    return request


def upload(client, name: str, data: bytes, request: dict | None = None):
    return client.post("/api/jobs", data={"request": json.dumps(request or job_request())},
                       files={"file": (name, data, "application/octet-stream")})


def test_health_models_and_prompts(random_checkpoint, tmp_path):
    with studio_client(create_app(random_checkpoint, tmp_path / "out", device="cpu")) as client:
        health = client.get("/api/health").json()
        assert health["status"] == "ok" and health["model"] == random_checkpoint.name  # no absolute path shown
        assert str(random_checkpoint.parent) not in json.dumps(client.get("/api/models").json())
        assert health["jobs"] == {"queued": 0, "running": 0, "queue_size": 16, "workers": 1}
        model = client.get("/api/models").json()["models"][0]
        assert model["prompts"] == 3 and not model["unconditional_only"]
        assert model["config"]["patch_length"] == 32 and model["parameters"] > 0
        assert client.get("/api/prompts").json() == {"registry": True, "prompts": REGISTRY}
        page = client.get("/")
        assert page.status_code == 200 and 'id="period"' in page.text and "/static/app.js" in page.text
        assert "function updatePickers" in client.get("/static/app.js").text
        formats = client.get("/api/formats").json()  # the page builds its downloads and uploads from this
        assert formats["formats"] == list(OUTPUT_FORMATS) and ".mid" in formats["inputs"]
        downloads = {entry["key"]: entry["label"] for entry in formats["files"] if entry["label"]}
        assert downloads["abc"] == "ABC" and downloads["wav"] == "WAV" and "svg" not in downloads
        spec = client.get("/openapi.json").json()
        sampling = spec["components"]["schemas"]["SamplingIn"]["properties"]  # the page's defaults come from here
        defaults = SamplingSettings()
        assert {k: sampling[k]["default"] for k in ("temperature", "top_k", "top_p", "strict")} == {
            "temperature": defaults.temperature, "top_k": defaults.top_k, "top_p": defaults.top_p,
            "strict": defaults.strict}
        assert 'id="temperature" type="number" min="0" max="10" step="0.05">' in page.text  # no second default
        assert "/api/jobs/{job_id}/files/{name}" in spec["paths"]
        assert spec["components"]["schemas"]["JobRequest"]["properties"]["n"]["maximum"] == 8
        assert "/openapi.json" in client.get("/docs").text  # the offline API page


def test_unconditional_model_and_missing_checkpoint(tmp_path):
    bare = save_checkpoint(tmp_path / "bare", random_model(), prompts=[])
    with studio_client(create_app(bare, tmp_path / "out", device="cpu")) as client:
        assert client.get("/api/prompts").json() == {"registry": False, "prompts": []}
        assert client.get("/api/models").json()["models"][0]["unconditional_only"] is True
        partial = client.post("/api/jobs", json=job_request(prompt={"period": "Romantic"}))
        assert partial.status_code == 400 and "no prompt registry" in partial.json()["detail"]
        job = wait_for_job(client, client.post("/api/jobs", json=job_request(prompt=None)).json()["id"])
        assert job["state"] == "done" and job["request"]["prompt"] is None
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        create_app(tmp_path / "nowhere", tmp_path / "out", device="cpu")


def test_job_lifecycle_files_and_history_survive_a_restart(random_checkpoint, tmp_path):
    out = tmp_path / "out"
    with studio_client(create_app(random_checkpoint, out, device="cpu")) as client:
        raw_sampling = {"temperature": 1.0, "top_k": 9, "top_p": 0.9, "strict": False}
        response = client.post("/api/jobs", json=job_request(n=2, seed=7, sampling=raw_sampling))
        assert response.status_code == 202, response.text
        created = response.json()
        assert created["state"] in ("queued", "running") and created["request"]["prompt"] == CHOPIN
        job = wait_for_job(client, created["id"])
        assert job["state"] == "done", job
        assert job["progress"]["total"] == 2 and job["progress"]["chars"] > 0
        assert job["progress"]["chars_per_second"] > 0
        assert [piece["seed"] for piece in job["results"]] == [7, 8]
        for piece in job["results"]:
            # Random weights sampled raw write garbage: it must be reported invalid, with the reason, not hidden.
            assert piece["valid"] is False and piece["error"]
            raw = client.get(job["files_url"] + piece["files"]["raw_abc"][0])
            assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
            assert raw.text.startswith("%Romantic\n%Chopin, Frederic\n%Keyboard\n")
            manifest = client.get(job["files_url"] + piece["files"]["manifest"][0]).json()
            assert manifest["hash"] == content_hash(raw.text) and manifest["seed"] == piece["seed"]
            assert manifest["sampling"]["temperature"] == 1.0 and manifest["limits"]["max_bars"] == 2
        download = client.get(job["files_url"] + job["results"][0]["files"]["raw_abc"][0], params={"download": 1})
        assert "attachment" in download.headers["content-disposition"]
        history = client.get("/api/jobs").json()["jobs"]
        assert [entry["id"] for entry in history] == [job["id"]]
    lines = [json.loads(line) for line in (out / HISTORY_FILE).read_text().splitlines()]
    assert [line["state"] for line in lines] == ["queued", "running", "done"]
    # A new server on the same folder knows the finished job and still serves its files.
    with studio_client(create_app(random_checkpoint, out, device="cpu")) as client:
        again = client.get(f"/api/jobs/{job['id']}").json()
        assert again["state"] == "done" and again["results"] == job["results"]
        assert client.get(job["files_url"] + job["results"][1]["files"]["raw_abc"][0]).status_code == 200


def test_upload_a_beginning_renders_score_and_audio(stopping_checkpoint, tmp_path):
    # verovio engraves only in the first thread that used it unless each toolkit is given its resource folder:
    # engrave here first, so the worker thread below is never that first thread.
    assert len(render_svg_pages(abc_to_musicxml(BEGINNING_ABC))) == 1
    with studio_client(create_app(stopping_checkpoint, tmp_path / "out", device="cpu")) as client:
        response = upload(client, "beginning.abc", BEGINNING_ABC.encode(), job_request(max_bars=4))
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.json()["id"])
        assert job["state"] == "done" and job["request"]["continue_from"] == "beginning.abc"
        piece = job["results"][0]
        assert piece["valid"] is True and piece["stop_reason"] == "eos", piece
        files = piece["files"]
        assert {"abc", "musicxml", "midi", "wav"} <= set(files) and (files.get("png") or files.get("svg"))
        raw = client.get(job["files_url"] + files["raw_abc"][0]).text
        assert raw.startswith("%Romantic\n%Chopin, Frederic\n%Keyboard\n") and "[r:0/" in raw and "[V:2]" in raw
        if "png" in files:
            image = client.get(job["files_url"] + files["png"][0])
            assert image.headers["content-type"] == "image/png" and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        wav = client.get(job["files_url"] + files["wav"][0])
        assert wav.headers["content-type"] == "audio/wav" and wav.content[:4] == b"RIFF" and len(wav.content) > 1000
        assert client.get(job["files_url"] + files["midi"][0]).content[:4] == b"MThd"
        musicxml = client.get(job["files_url"] + files["musicxml"][0]).text
        assert musicxml.count("<score-part ") == 2 and musicxml.count("<measure ") == 4
        assert (tmp_path / "out" / "jobs" / job["id"] / "beginning.abc").read_bytes() == BEGINNING_ABC.encode()


def test_bad_requests_get_one_line_4xx_reasons(random_checkpoint, tmp_path):
    with studio_client(create_app(random_checkpoint, tmp_path / "out", device="cpu", max_upload_bytes=4000)) as client:
        wrong = client.post("/api/jobs", json=job_request(prompt={"period": "Romantic", "composer": "Chopin",
                                                                  "instrumentation": "Keyboard"}))
        assert wrong.status_code == 400
        assert "closest: Romantic | Chopin, Frederic | Keyboard" in wrong.json()["detail"]
        ambiguous = client.post("/api/jobs", json=job_request(prompt={"period": "Romantic"}))
        assert ambiguous.status_code == 400 and "ambiguous" in ambiguous.json()["detail"]
        invalid = client.post("/api/jobs", json=job_request(n=100, sampling={"top_p": 0}))
        assert invalid.status_code == 422
        assert "n:" in invalid.json()["detail"] and "sampling.top_p" in invalid.json()["detail"]
        assert client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 400
        assert client.post("/api/jobs", json={"unknown": 1}).status_code == 422

        broken = upload(client, "broken.musicxml", b"<?xml version='1.0'?><score-partwise><part id='P1'>")
        assert broken.status_code == 400
        detail = broken.json()["detail"]
        assert detail.startswith("broken.musicxml") and "\n" not in detail and "notagen-upload" not in detail
        no_music = upload(client, "empty-tune.abc", b"X:1\nT:nothing\nK:C\n")
        assert no_music.status_code == 400 and no_music.json()["detail"].startswith("empty-tune.abc")
        empty_midi = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
        silent = upload(client, "silent.mid", empty_midi)
        assert silent.status_code == 400 and "notagen-midi" not in silent.json()["detail"]
        assert upload(client, "notes.txt", BEGINNING_ABC.encode()).status_code == 400
        assert upload(client, "blank.abc", b"   \n").status_code == 400
        # Over the limit: caught by the body's announced size, and by the bytes actually read.
        assert upload(client, "big.abc", b"%" * 100_000).status_code == 413
        over = upload(client, "big.abc", BEGINNING_ABC.encode() + b"%" * 4000)
        assert over.status_code == 413 and "too large" in over.json()["detail"]
        assert client.get("/api/jobs").json()["jobs"] == []  # nothing was queued by a bad request


def test_files_outside_a_job_folder_are_never_served(random_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "secret.txt").write_text("TOP-SECRET")
    (tmp_path / "outside.txt").write_text("TOP-SECRET")
    with studio_client(create_app(random_checkpoint, out, device="cpu")) as client:
        job = wait_for_job(client, client.post("/api/jobs", json=job_request()).json()["id"])
        piece = job["results"][0]["files"]["raw_abc"][0]
        base = job["files_url"]
        assert client.get(base + piece).status_code == 200
        job_dir = out / "jobs" / job["id"]
        os.symlink(tmp_path / "outside.txt", job_dir / "link.txt")
        attempts = ["../../secret.txt", "..%2F..%2Fsecret.txt", "%2e%2e/%2e%2e/secret.txt",
                    "%2E%2E%2F%2E%2E%2Fsecret.txt", "..%5C..%5Csecret.txt", "%252e%252e%252fsecret.txt",
                    f"{piece.split('/')[0]}/../../../secret.txt", "/etc/passwd", "%2Fetc%2Fpasswd",
                    str(out / "secret.txt"), "link.txt", "../" + HISTORY_FILE, "..%2F..%2F" + HISTORY_FILE,
                    "", "%00"]
        for name in attempts:
            # (httpx resolves literal dot segments before sending; the load test sends them raw to uvicorn.)
            response = client.get(base + name)
            assert response.status_code in (400, 404), (name, response.status_code)
            assert "TOP-SECRET" not in response.text and "root:" not in response.text
        assert client.get("/api/jobs/0123456789abcdef/files/" + piece).status_code == 404
        assert client.get("/api/jobs/..%2F..%2F/files/secret.txt").status_code == 404


def test_queue_limit_gives_429_and_cancelling_a_queued_job(random_checkpoint, tmp_path):
    # Without the lifespan (no `with`), no worker starts: the queue fills deterministically.
    client = studio_client(create_app(random_checkpoint, tmp_path / "out", queue_size=2, device="cpu"))
    first = client.post("/api/jobs", json=job_request(seed=1)).json()
    second = client.post("/api/jobs", json=job_request(seed=2)).json()
    assert (first["state"], first["position"], second["position"]) == ("queued", 0, 1)
    full = client.post("/api/jobs", json=job_request(seed=3))
    assert full.status_code == 429 and full.headers["retry-after"] and "2 jobs waiting" in full.json()["detail"]
    assert upload(client, "broken.musicxml", b"<score-partwise>").status_code == 429  # refused before reading
    cancelled = client.post(f"/api/jobs/{first['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert client.get(f"/api/jobs/{second['id']}").json()["position"] == 0
    assert client.post("/api/jobs", json=job_request(seed=3)).status_code == 202
    assert client.delete(f"/api/jobs/{second['id']}").json()["state"] == "cancelled"
    assert client.post("/api/jobs/doesnotexist/cancel").status_code == 404
    assert client.get("/api/health").json()["jobs"]["queued"] == 1
    waiting = client.get("/api/jobs").json()["jobs"][0]
    # The server stops with a job still queued (and a line torn by the crash): a new server says what happened.
    with open(tmp_path / "out" / HISTORY_FILE, "a") as history:
        history.write('{"id": "torn", "sta')
    restarted = studio_client(create_app(random_checkpoint, tmp_path / "out", queue_size=2, device="cpu"))
    jobs = {job["id"]: job for job in restarted.get("/api/jobs").json()["jobs"]}
    assert set(jobs) == {first["id"], second["id"], waiting["id"]}
    assert jobs[waiting["id"]]["state"] == "failed" and "interrupted" in jobs[waiting["id"]]["error"]
    assert jobs[first["id"]]["state"] == "cancelled"


def test_serve_command_says_when_there_is_no_model(monkeypatch, capsys, tmp_path):
    from notagen.cli import main

    monkeypatch.setattr("notagen.weights.default_checkpoint_path", lambda: None)
    assert main(["serve", "--output", str(tmp_path / "out")]) == 1
    assert "no model: pass --checkpoint" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "missing"), "--port", "0"]) == 1
    assert "--port must be between 1 and 65535" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_cancel_a_running_job_stops_the_engine(random_checkpoint, tmp_path):
    with studio_client(create_app(random_checkpoint, tmp_path / "out", device="cpu")) as client:
        # 8 pieces with up to 5 retries each: far longer than the wait below if cancelling did not work.
        long_job = client.post("/api/jobs", json=job_request(n=8, retries=5, max_bars=64)).json()
        deadline = time.monotonic() + 20
        while client.get(f"/api/jobs/{long_job['id']}").json()["progress"].get("chars", 0) == 0:
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.02)
        asked = time.monotonic()
        assert client.delete(f"/api/jobs/{long_job['id']}").status_code == 200
        job = wait_for_job(client, long_job["id"], timeout=10)
        assert job["state"] == "cancelled" and job["results"] == [] and time.monotonic() - asked < 5
        # The worker survives and takes the next job.
        after = wait_for_job(client, client.post("/api/jobs", json=job_request()).json()["id"])
        assert after["state"] == "done"
