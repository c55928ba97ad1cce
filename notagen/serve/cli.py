"""`notagen serve`: run the studio (web page + HTTP API) with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from notagen.errors import InputError


def serve_command(checkpoint: str | None = None, host: str = "127.0.0.1", port: int = 7860,
                  output: Path = Path("studio-output"), workers: int = 1, queue_size: int = 16,
                  device: str = "auto", precision: Literal["fp32", "bf16", "int8"] = "fp32",
                  allowed_hosts: list[str] | None = None) -> int:
    """Serve the studio: a web page and an HTTP API to generate pieces, then see and hear them.

    Open http://HOST:PORT/ for the page and http://HOST:PORT/docs for the API (OpenAPI). The model is loaded
    once; jobs run on WORKERS threads that share it, at most QUEUE_SIZE wait (more get HTTP 429). Every piece and
    the job history (jobs.jsonl) are kept in OUTPUT, so the history survives a restart.

    Args:
        checkpoint: Model directory (notagen train), official .pth file, hf:OWNER/REPO/FILE or an official
            name (notagen-x, large, …; see `notagen generate --help`); default: the bundled model.
        host: Address to listen on (127.0.0.1: this machine only; 0.0.0.0 exposes the studio to the network).
        port: TCP port.
        output: Folder for the pieces and the job history.
        workers: Jobs generated at the same time (each is a thread sharing the one model).
        queue_size: Jobs that may wait for a worker.
        device: cpu, cuda, mps, or auto.
        precision: Weights: fp32, bf16 or int8 (CPU; a quarter of the memory, several times faster for large
            models).
        allowed_hosts: Host names clients may use in the address (default: 127.0.0.1, localhost, ::1 and --host
            when it is a name or address of its own); requests naming any other host get 421. "*" allows any.

    Examples:
        notagen serve --checkpoint runs/mini
        notagen serve --checkpoint runs/mini --port 8000 --workers 2 --output ~/notagen-studio
        notagen serve --checkpoint notagen-x --precision int8
        notagen serve --host 0.0.0.0 --allowed-hosts studio.lan 192.168.1.20
    """
    try:
        import uvicorn
    except ImportError as error:
        raise InputError("notagen serve needs the web extras: pip install 'notagen[serve]'") from error
    from notagen.serve.app import create_app

    if not 0 < port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {port}")
    if workers < 1 or queue_size < 1:
        raise InputError(f"--workers and --queue-size must be at least 1, got {workers} and {queue_size}")
    from notagen.serve.app import LOOPBACK_HOSTS

    hosts = list(allowed_hosts or LOOPBACK_HOSTS)
    if not allowed_hosts and host not in ("0.0.0.0", "::", ""):
        hosts.append(host)
    app = create_app(checkpoint, output, workers=workers, queue_size=queue_size, device=device,
                     precision=precision, allowed_hosts=hosts)
    print(f"notagen studio: http://{host}:{port}/ (API docs: http://{host}:{port}/docs; output in {output})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
