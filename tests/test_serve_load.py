"""The studio under load on loopback: 20 clients submit at once to a real uvicorn server with 2 workers and a
queue of 2; the ones turned away must get 429 and retry; every accepted job must finish with its own parameters
(nothing lost, nothing mixed up). Also sends raw, un-normalised `../` requests, which HTTP clients never send."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_serve_api import REGISTRY, job_request, random_model, running_server  # noqa: E402

from notagen.checkpoint import save_checkpoint  # noqa: E402
from notagen.serve.app import create_app  # noqa: E402

CLIENTS = 20
DISTINCT = 10  # clients i and i + 10 ask for the same piece: their outputs must be identical


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "random", random_model(), prompts=REGISTRY)


def params(i: int) -> dict:
    entry = REGISTRY[(i % DISTINCT) % len(REGISTRY)]
    prompt = {key: entry[key] for key in ("period", "composer", "instrumentation")}
    return job_request(prompt=prompt, seed=100 + i % DISTINCT, max_bars=2,
                       sampling={"temperature": 0.8 + 0.1 * (i % DISTINCT), "top_k": 5 + i % DISTINCT, "top_p": 0.95})


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply


def test_twenty_concurrent_clients_get_their_own_pieces(random_checkpoint, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "secret.txt").write_text("TOP-SECRET")
    app = create_app(random_checkpoint, out, workers=2, queue_size=2, device="cpu")
    outcomes: dict[int, dict] = {}
    statuses: dict[int, list[int]] = {i: [] for i in range(CLIENTS)}
    problems: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(i: int, base: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=20) as http:
                start.wait(timeout=20)
                deadline = time.monotonic() + 60
                for _ in range(2000):  # bounded, and bounded in time
                    response = http.post("/api/jobs", json=params(i))
                    statuses[i].append(response.status_code)
                    if response.status_code == 202:
                        break
                    assert response.status_code == 429, response.text
                    assert response.headers["retry-after"]
                    assert time.monotonic() < deadline, "never accepted"
                    time.sleep(0.2 + 0.01 * i)
                job_id = response.json()["id"]
                for _ in range(5000):
                    job = http.get(f"/api/jobs/{job_id}").json()
                    if job["state"] not in ("queued", "running"):
                        break
                    assert time.monotonic() < deadline, f"job {job_id} not finished"
                    time.sleep(0.05)
                raw = http.get(f"/api/jobs/{job_id}/files/" + job["results"][0]["files"]["raw_abc"][0]).text
                outcomes[i] = {"job": job, "raw": raw}
        except Exception as error:  # reported below with the client's number
            problems.append(f"client {i}: {type(error).__name__}: {error}")

    started = time.monotonic()
    with running_server(app) as base:
        threads = [threading.Thread(target=client, args=(i, base)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        port = int(base.rsplit(":", 1)[1])
        some_job = outcomes[0]["job"]["id"] if 0 in outcomes else "x"
        for path in (f"/api/jobs/{some_job}/files/../../secret.txt", f"/api/jobs/{some_job}/files/../../jobs.jsonl",
                     f"/api/jobs/{some_job}/files//etc/passwd", "/static/../../serve/app.py",
                     f"/api/jobs/{some_job}/files/%2e%2e/%2e%2e/secret.txt"):
            status, reply = raw_get(port, path)
            assert status in (400, 404), (path, status)
            assert b"TOP-SECRET" not in reply and b"root:" not in reply and b"create_app" not in reply
        history = httpx.get(base + "/api/jobs").json()["jobs"]
    elapsed = time.monotonic() - started

    assert not problems, problems
    engines = app.state.runner.engines  # one per worker, all over the one model loaded at start
    assert 1 <= len(engines) <= 2 and all(engine.model is app.state.runner.checkpoint.model for engine in engines)
    assert len(outcomes) == CLIENTS
    assert sum(status == 429 for codes in statuses.values() for status in codes) > 0  # the queue was too small
    assert all(codes[-1] == 202 for codes in statuses.values())
    ids = {outcome["job"]["id"] for outcome in outcomes.values()}
    assert len(ids) == CLIENTS and {job["id"] for job in history} == ids
    for i, outcome in outcomes.items():
        job, asked = outcome["job"], params(i)
        assert job["state"] == "done", job
        assert job["request"]["seed"] == asked["seed"] and job["request"]["prompt"] == asked["prompt"]
        assert job["request"]["sampling"]["temperature"] == pytest.approx(asked["sampling"]["temperature"])
        assert job["request"]["sampling"]["top_k"] == asked["sampling"]["top_k"]
        piece = job["results"][0]
        assert piece["seed"] == asked["seed"] and piece["name"].endswith(f"seed{asked['seed']}")
        prompt = asked["prompt"]
        assert outcome["raw"].startswith(f"%{prompt['period']}\n%{prompt['composer']}\n%{prompt['instrumentation']}\n")
    for i in range(DISTINCT):  # same request → same piece, whichever worker wrote it and whatever ran beside it
        assert outcomes[i]["raw"] == outcomes[i + DISTINCT]["raw"]
    assert len({outcomes[i]["raw"] for i in range(DISTINCT)}) == DISTINCT
    print(f"{CLIENTS} jobs in {elapsed:.1f} s; "
          f"{sum(len(codes) - 1 for codes in statuses.values())} submissions turned away with 429 and retried")
