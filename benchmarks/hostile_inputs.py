"""Hostile inputs: every file of the malformed corpus through `notagen convert`, `check`, `data build` and the
studio, with the default limits; and re-windowing a long continuation, bisection against the former line-by-line
scan, interleaved in one run.

    python benchmarks/hostile_inputs.py [--bomb-mib 1024] [--bars 1000 3000]

Prints one table (input × command → outcome, seconds) and writes benchmarks/results/hostile_inputs.json. The
corpus is the one the tests make (tests/hostile_corpus.py), with a zip bomb of 1 GiB (in 1 MB) as reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hostile_corpus import make_corpus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "hostile_inputs.json"


def _cli(*args: str) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "notagen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    seconds = time.perf_counter() - started
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    verdict = "ok" if done.returncode == 0 else ("invalid" if done.returncode == 1 and not done.stderr.strip()
                                                 else "refused")
    return f"{verdict}: {lines[0][:110] if lines else ''}", seconds


def _data_build(folder: Path, out: Path) -> dict[str, tuple[str, float]]:
    _, seconds = _cli("data", "build", str(folder), "--out", str(out), "--workers", "1", "--no-progress")
    rows: dict[str, tuple[str, float]] = {}
    for line in (out / "index.jsonl").read_text().splitlines() if (out / "index.jsonl").exists() else []:
        record = json.loads(line)
        rows[Path(record["source"]).name] = ("built", 0.0)
    report = json.loads((out / "report.json").read_text())
    for item in report["failures"] + report["excluded"]:
        rows[Path(item["source"]).name] = (f"{item['kind']}: {item['reason'][:100]}", 0.0)
    journal = out / ".build" / "journal.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    by_id = {entry["id"]: entry.get("seconds") or 0.0 for entry in entries}
    for line in (out / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows[Path(record["source"]).name] = ("built", by_id.get(record["id"], 0.0))
    rows["(whole build)"] = ("done", seconds)
    return rows


def _studio(folder: Path, names: list[str], work: Path) -> tuple[dict[str, tuple[str, float]], list[float]]:
    import httpx
    import torch
    import uvicorn

    from notagen.checkpoint import save_checkpoint
    from notagen.config import ModelConfig
    from notagen.model import NotaGenModel
    from notagen.serve.app import STUDIO_HEADER, create_app

    torch.manual_seed(0)
    registry = [{"period": "Romantic", "composer": "Chopin, Frederic", "instrumentation": "Keyboard", "count": 1}]
    checkpoint = save_checkpoint(work / "model", NotaGenModel(ModelConfig.preset("tiny", patch_length=32)),
                                 prompts=registry)
    app = create_app(checkpoint, work / "studio", device="cpu")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/api/health")
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rows: dict[str, tuple[str, float]] = {}
    request = json.dumps({"prompt": None, "n": 1, "max_bars": 2})
    try:
        with httpx.Client(base_url=base, timeout=600, headers={STUDIO_HEADER: "1"}) as http:
            for name in names:
                started = time.perf_counter()
                response = http.post("/api/jobs", data={"request": request},
                                     files={"file": (name, (folder / name).read_bytes())})
                detail = response.json().get("detail", response.json().get("state", ""))
                rows[name] = (f"{response.status_code}: {str(detail)[:100]}", time.perf_counter() - started)
            evil = httpx.post(f"{base}/api/jobs", content=request,
                              headers={"content-type": "text/plain", "origin": "http://evil.example"})
            rows["(cross-origin text/plain POST)"] = (f"{evil.status_code}: {evil.json()['detail'][:100]}", 0.0)
            foreign = httpx.get(f"{base}/api/health", headers={"host": "evil.example"})
            rows["(foreign Host)"] = (f"{foreign.status_code}: {foreign.json()['detail'][:60]}", 0.0)
            chunked = http.post("/api/jobs", content=iter([b" " * 65536] * 1600),
                                headers={"content-type": "application/json"})
            rows["(100 MB chunked JSON body)"] = (f"{chunked.status_code}: {chunked.json()['detail'][:100]}", 0.0)
    finally:
        stop.set()
        watcher.join(5)
        server.should_exit = True
        thread.join(15)
    return rows, latencies


def _rewindow_rows(bar_counts: list[int], repeats: int = 3) -> list[dict]:
    from notagen.generation.engine import body_lines_of, close_finished_line, rewindow, split_context
    from notagen.patchilizer import Patchilizer

    def scan(text: str, patchilizer: Patchilizer):   # the former implementation, as the baseline
        metadata, body = body_lines_of(text)
        cut = max(1, len(body) // 2)
        for keep in range(min(cut, len(body)), 0, -1):
            window = "".join(metadata + body[-keep:])
            full, prefix = close_finished_line(*split_context(patchilizer.encode_generate(window), 16), window, 16)
            if len(full) <= patchilizer.patch_length - 2:
                return full, prefix, cut
        return None

    patchilizer = Patchilizer(patch_length=1024)
    rows = []
    for bars in bar_counts:
        text = "L:1/8\nM:4/4\nK:D\n" + "".join(f"[r:{i}/{bars - 1 - i}][V:1]d2fa d'2a2|[V:2]D,2F,A, D2A,2|\n"
                                               for i in range(bars))
        times: dict[str, list[float]] = {"scan": [], "bisection": []}
        for _ in range(repeats):   # interleaved: both see the same machine load
            for name in ("scan", "bisection"):
                started = time.perf_counter()
                result = scan(text, patchilizer) if name == "scan" else rewindow(text, None, patchilizer)
                times[name].append(time.perf_counter() - started)
                assert result is not None
        assert scan(text, patchilizer) == rewindow(text, None, patchilizer)
        rows.append({"bars": bars, "scan_s": min(times["scan"]), "bisection_s": min(times["bisection"]),
                     "repeats": repeats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-mib", type=int, default=1024)
    parser.add_argument("--bars", type=int, nargs="+", default=[1000, 3000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notagen-hostile-") as tmp:
        work = Path(tmp)
        folder = work / "corpus"
        expected = make_corpus(folder, bomb_mib=args.bomb_mib)
        names = list(expected)
        table: dict[str, dict[str, tuple[str, float]]] = {name: {} for name in names}
        for name in names:
            table[name]["convert"] = _cli("convert", str(folder / name), str(work / f"{name}.out.abc"))
            if name.endswith(".abc"):
                table[name]["check"] = _cli("check", str(folder / name))
        built = _data_build(folder, work / "dataset")
        for name, cell in built.items():
            table.setdefault(name, {})["data build"] = cell
        studio, latencies = _studio(folder, names, work)
        for name, cell in studio.items():
            table.setdefault(name, {})["studio"] = cell
    rewindows = _rewindow_rows(args.bars)
    commands = ("convert", "check", "data build", "studio")
    print(f"{'input':32s} {'command':10s} {'seconds':>8s}  outcome")
    for name, cells in table.items():
        for command in commands:
            if command in cells:
                outcome, seconds = cells[command]
                print(f"{name:32s} {command:10s} {seconds:8.2f}  {outcome}")
    print(f"\nstudio /api/health during the uploads: {len(latencies)} requests, max {max(latencies):.3f} s, "
          f"median {sorted(latencies)[len(latencies) // 2]:.3f} s")
    print("\nre-windowing a continuation (patch_length 1024), best of 3, interleaved:")
    for row in rewindows:
        print(f"  {row['bars']:5d} bars: former scan {row['scan_s']:.3f} s, bisection {row['bisection_s']:.4f} s "
              f"({row['scan_s'] / row['bisection_s']:.0f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bomb_mib": args.bomb_mib,
        "table": [{"input": name, "command": command, "outcome": cells[command][0],
                   "seconds": round(cells[command][1], 3)}
                  for name, cells in table.items() for command in commands if command in cells],
        "health": {"requests": len(latencies), "max_s": max(latencies), "median_s":
                   sorted(latencies)[len(latencies) // 2]},
        "rewindow": rewindows}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
