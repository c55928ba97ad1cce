"""The notagen studio: a FastAPI app serving an HTTP API (OpenAPI at /docs) and its own single page.

`create_app` loads the model once; a `JobManager` runs generation jobs on a bounded pool of worker threads that
share it. Results are written under `OUTPUT/jobs/<job id>/` and served only from there: every file name is
resolved and checked to lie inside the job's folder, so `../`, encoded variants and absolute paths get a 404.

Hostile clients (`StudioGuard`, in front of everything): a request whose `Host` is not an allowed name (loopback by
default: DNS rebinding) gets 421; a state-changing request (POST, PUT, PATCH, DELETE) needs a JSON content type or
the `X-Notagen-Studio` header (a header a cross-site page cannot send without a preflight this server never allows)
and, when the browser sends an `Origin`, the studio's own; every body is counted as it arrives, whatever the
transfer encoding (chunked included), and cut off with 413 past its bound. An uploaded beginning is converted in a
worker process bounded by `notagen.limits.Limits` (the server process never parses a user's file), at most
`CONVERSIONS` at a time; a limit hit gives 413 naming it. Malformed or wrongly typed JSON (nesting, `true` for a
number) gives 400/422; responses never show absolute paths.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from notagen import __version__
from notagen.errors import NotaGenError
from notagen.formats import MEDIA_TYPES, SCORE_INPUTS, describe
from notagen.generation.continuation import continuation_context, with_prompt
from notagen.generation.sampling import SamplingSettings
from notagen.limits import DEFAULT_LIMITS, LimitError, Limits
from notagen.prompt import prompt_context, resolve_prompt
from notagen.serve.jobs import JobManager, QueueFullError
from notagen.serve.runner import PieceRunner
from notagen.weights import open_checkpoint, pick_device

STATIC_DIR = Path(__file__).resolve().parent / "static"
UPLOAD_SUFFIXES = tuple(SCORE_INPUTS)
MAX_PIECES = 8
MAX_BARS = 1024
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the JSON request field, on top of the file itself
MAX_BODY_BYTES = 64 * 1024  # any other request's body (a JSON job request is far smaller)
STUDIO_HEADER = "X-Notagen-Studio"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CONVERSIONS = 2  # uploads converted at the same time (each in its own bounded worker process)
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


# -- request schema -------------------------------------------------------------------------------------------


class PromptIn(BaseModel):
    """A (period, composer, instrumentation) prompt; fields left out match anything if one entry remains."""

    model_config = ConfigDict(extra="forbid", strict=True)
    period: str | None = Field(None, max_length=200, examples=["Romantic"])
    composer: str | None = Field(None, max_length=200, examples=["Chopin, Frederic"])
    instrumentation: str | None = Field(None, max_length=200, examples=["Keyboard"])


class SamplingIn(BaseModel):
    """How characters are drawn (the official settings by default)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float = Field(SamplingSettings.temperature, ge=0, le=10)
    top_k: int = Field(SamplingSettings.top_k, ge=0, le=128, description="0 keeps all characters; 1 is greedy")
    top_p: float = Field(SamplingSettings.top_p, gt=0, le=1)
    order: Literal["reference", "standard"] = SamplingSettings.order
    strict: bool = Field(SamplingSettings.strict, description="strict decoding: only characters that keep the piece "
                         "valid by every rule of `notagen check` (false: the raw distribution)")


class JobRequest(BaseModel):
    """A generation job. As multipart/form-data, send this JSON in a `request` field and the beginning to
    continue (ABC, MusicXML or MIDI) in a `file` field."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: PromptIn | None = Field(None, description="null: unconditional")
    sampling: SamplingIn = Field(default_factory=SamplingIn)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the first piece; piece i uses seed + i")
    n: int = Field(1, ge=1, le=MAX_PIECES, description="pieces to write")
    max_bars: int | None = Field(32, ge=1, le=MAX_BARS, description="stop a piece after this many bars")
    max_seconds: float | None = Field(None, gt=0, description="stop a piece after this many seconds "
                                                                "(capped by the server)")
    retries: int = Field(0, ge=0, le=5, description="regenerations of an invalid piece, with the next seed")


def _busy(queue_size: int) -> JSONResponse:
    return JSONResponse({"detail": f"the queue is full ({queue_size} jobs waiting); retry later"}, status_code=429,
                        headers={"Retry-After": "2"})


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        parts.append(f"{where}: {item['msg']}")
    return "invalid request: " + "; ".join(parts)


class _BodyTooLarge(Exception):
    pass


def _host_name(value: str) -> str:
    """`Host`/`Origin` authority → the host name alone, lower case (`[::1]:8000` → `::1`)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class StudioGuard:
    """ASGI middleware: allowed `Host` names, same-origin state changes, bounded bodies (see the module docstring)."""

    def __init__(self, app: Any, allowed_hosts: list[str], body_limit: Any) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {_host_name(host) for host in allowed_hosts}
        self.body_limit = body_limit   # (method, path, media type) → bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        if not self.any_host and _host_name(host) not in self.allowed:
            await _refuse(send, 421, f"host {host[:100]!r} is not served here (allowed: {sorted(self.allowed)})")
            return
        method = scope["method"]
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if method in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1].rstrip("/").lower() != host.lower():
                await _refuse(send, 403, f"cross-origin request from {origin[:100]!r} refused")
                return
            if media != "application/json" and STUDIO_HEADER.lower() not in headers:
                await _refuse(send, 403, f"send JSON (application/json) or the {STUDIO_HEADER} header")
                return
        limit = self.body_limit(method, scope["path"], media)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _refuse(send, 413, f"request body too large: {length[:20]} bytes (limit {limit})")
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"request body too large (limit {limit} bytes)")


async def _refuse(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _public_source(source: Any) -> Any:
    """A model's source without the folders above it (responses never show absolute paths)."""
    if isinstance(source, str) and (source.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", source)):
        return Path(source).name
    return source


def _safe_upload_name(name: str | None) -> str:
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[-80:]
    return cleaned or "upload"


# -- app ------------------------------------------------------------------------------------------------------


def create_app(checkpoint: str | Path | None, output_dir: Path, workers: int = 1, queue_size: int = 16,
               max_upload_bytes: int = 2_000_000, device: str = "auto",
               max_piece_seconds: float = 600.0, precision: str = "fp32",
               allowed_hosts: list[str] | None = None, limits: Limits | None = None) -> FastAPI:
    """The studio app: loads `checkpoint` once (CheckpointError, one line, when there is none or it is bad).

    Jobs run on `workers` threads; at most `queue_size` wait (more → 429). Uploads above `max_upload_bytes` → 413.
    Every piece stops after `max_piece_seconds`, whatever the request asks. Requests must name one of
    `allowed_hosts` in their `Host` header (default: loopback names; "*" allows any). Uploads are converted under
    `limits` (default `notagen.limits.DEFAULT_LIMITS`).
    """
    limits = limits or DEFAULT_LIMITS
    conversions = threading.BoundedSemaphore(CONVERSIONS)
    output_dir = Path(output_dir)
    chosen_device = pick_device(device)
    loaded = open_checkpoint(checkpoint, device=chosen_device, precision=precision)  # type: ignore[arg-type]
    registry = [dict(entry) for entry in loaded.prompts]
    runner = PieceRunner(loaded, output_dir, chosen_device)
    manager = JobManager(runner, output_dir, workers=workers, queue_size=queue_size)
    runner.manager = manager

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        manager.start()
        try:
            yield
        finally:
            manager.close()

    # /docs is an offline page reading /openapi.json; FastAPI's Swagger UI (scripts from a CDN) is /docs/swagger.
    app = FastAPI(title="notagen studio", version=__version__, lifespan=lifespan, docs_url="/docs/swagger",
                  redoc_url=None, description="Generate symbolic music with a NotaGen-style model, "
                                              "then see and hear it.")
    _add_request_schemas(app)
    app.state.manager = manager
    app.state.runner = runner
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def body_limit(method: str, path: str, media: str) -> int:
        upload = (method, path, media) == ("POST", "/api/jobs", "multipart/form-data")
        return max_upload_bytes + FORM_OVERHEAD if upload else MAX_BODY_BYTES

    app.add_middleware(StudioGuard, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS), body_limit=body_limit)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    @app.get("/api/health", tags=["studio"])
    def health() -> dict[str, Any]:
        """Is the server up, which model does it serve, how busy is it."""
        return {"status": "ok", "version": __version__, "model": _public_source(runner.model_info["source"]),
                "device": chosen_device, "jobs": manager.counts()}

    @app.get("/api/models", tags=["studio"])
    def models() -> dict[str, Any]:
        """The loaded model (one per server): source, size, configuration, prompt registry size."""
        info = {**runner.model_info, "source": _public_source(runner.model_info["source"])}
        return {"models": [{"id": "default", **info, "prompts": len(registry),
                            "unconditional_only": not registry}]}

    @app.get("/api/prompts", tags=["studio"])
    def prompts() -> dict[str, Any]:
        """The (period, composer, instrumentation) prompts the model was trained with; empty: unconditional."""
        return {"registry": bool(registry), "prompts": registry}

    @app.get("/api/formats", tags=["studio"])
    def formats() -> dict[str, Any]:
        """What each piece is written as (key, --formats choice, file suffix, media type, download label) and the
        file types a beginning to continue may be."""
        return describe()

    @app.post("/api/jobs", status_code=202, tags=["jobs"], openapi_extra={"requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "request": {"type": "string", "description": "a JobRequest as JSON"},
                "file": {"type": "string", "format": "binary",
                         "description": f"beginning to continue ({', '.join(UPLOAD_SUFFIXES)})"}}}},
        }}})
    async def create_job(request: Request) -> JSONResponse:
        """Queue a generation job (202 with its id); 400 for a bad prompt or upload, 413 too large, 429 busy."""
        if manager.counts()["queued"] >= queue_size:  # early, before reading an upload (submit checks again)
            return _busy(queue_size)
        content_type = request.headers.get("content-type", "")
        upload: UploadFile | None = None
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=4)
            raw = form.get("request") or "{}"
            file = form.get("file")
            if isinstance(file, UploadFile) and (file.filename or file.size):
                upload = file
            elif file is not None and not isinstance(file, UploadFile) and file:
                raise HTTPException(400, "the 'file' field must be a file upload")
            if not isinstance(raw, str):
                raise HTTPException(400, "the 'request' field must be JSON text")
        else:
            raw = (await request.body()).decode("utf-8", errors="replace") or "{}"
        try:
            body = JobRequest.model_validate(json.loads(raw))
        except json.JSONDecodeError as error:
            raise HTTPException(400, f"request is not JSON: {error}") from error
        except RecursionError as error:
            raise HTTPException(400, "request is not JSON this server reads: nested too deeply") from error
        except ValidationError as error:
            raise HTTPException(422, _validation_message(error)) from error
        given = body.prompt or PromptIn()
        fields = [(value or "").strip() or None for value in (given.period, given.composer, given.instrumentation)]
        try:
            prompt = resolve_prompt(*fields, registry)
        except NotaGenError as error:
            raise HTTPException(400, str(error)) from error
        context = prompt_context(prompt)
        upload_name = upload_bytes = None
        if upload is not None:
            upload_name = _safe_upload_name(upload.filename)
            suffix = Path(upload_name).suffix.lower()
            if suffix not in UPLOAD_SUFFIXES:
                raise HTTPException(400, f"{upload_name}: unsupported file type (use {', '.join(UPLOAD_SUFFIXES)})")
            upload_bytes = await upload.read(max_upload_bytes + 1)
            if len(upload_bytes) > max_upload_bytes:
                raise HTTPException(413, f"{upload_name}: upload too large (limit {max_upload_bytes} bytes)")
            if not upload_bytes.strip():
                raise HTTPException(400, f"{upload_name}: the file is empty")
            if not conversions.acquire(blocking=False):
                return JSONResponse({"detail": f"{CONVERSIONS} uploads are being converted; retry later"},
                                    status_code=429, headers={"Retry-After": "2"})
            try:
                beginning = await run_in_threadpool(_read_beginning, upload_name, upload_bytes, body.max_bars,
                                                    limits, loaded.model.config.patch_length)
            finally:
                conversions.release()
            context = with_prompt(prompt, beginning)
        max_seconds = min(body.max_seconds or max_piece_seconds, max_piece_seconds)
        spec = {"prompt": prompt and prompt.to_dict(), "sampling": body.sampling.model_dump(), "seed": body.seed,
                "n": body.n, "max_bars": body.max_bars, "max_seconds": max_seconds, "retries": body.retries,
                "continue_from": upload_name}
        try:
            job = manager.submit(spec, work=context)
        except QueueFullError:
            return _busy(queue_size)
        if upload_name is not None and upload_bytes is not None:
            folder = runner.job_dir(job.id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"beginning{Path(upload_name).suffix.lower()}").write_bytes(upload_bytes)
        return JSONResponse(manager.snapshot(job.id), status_code=202)

    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(limit: int = Query(200, ge=1, le=100_000)) -> dict[str, Any]:
        """The jobs this output folder has seen (the history survives restarts), newest first."""
        return {"jobs": manager.history()[:limit]}

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        """A job's state, progress (bars, chars/s) and, when done, its pieces and their files."""
        snapshot = manager.snapshot(job_id)
        if snapshot is None:
            raise HTTPException(404, f"no job {job_id!r}")
        snapshot["files_url"] = f"/api/jobs/{job_id}/files/"
        return snapshot

    def cancel(job_id: str) -> dict[str, Any]:
        if manager.cancel(job_id) is None:
            raise HTTPException(404, f"no job {job_id!r}")
        snapshot = manager.snapshot(job_id)
        assert snapshot is not None
        return snapshot

    app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a job")(cancel)
    app.delete("/api/jobs/{job_id}", tags=["jobs"], summary="Cancel a job (same as POST …/cancel)")(cancel)

    @app.get("/api/jobs/{job_id}/files/{name:path}", tags=["jobs"])
    def job_file(job_id: str, name: str, download: bool = False) -> FileResponse:
        """A file a job wrote (`<piece>/<piece>.wav` …); nothing outside the job's folder is ever served."""
        if manager.get(job_id) is None:
            raise HTTPException(404, f"no job {job_id!r}")
        target = _inside(runner.job_dir(job_id), name)
        if target is None:
            raise HTTPException(404, f"no file {name!r} in job {job_id}")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        media_type = MEDIA_TYPES.get(target.suffix.lower(), "application/octet-stream")
        if download:
            return FileResponse(target, media_type=media_type, filename=target.name, headers=headers)
        return FileResponse(target, media_type=media_type, headers=headers)

    return app


def _add_request_schemas(app: FastAPI) -> None:
    """Put JobRequest and its parts into the OpenAPI components (the job endpoint parses its body itself, since it
    takes JSON or multipart, so FastAPI does not see the model)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI keeps it in app.openapi_schema; the additions below stay in it
            job = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(job.pop("$defs", {}))
            schemas["JobRequest"] = job
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _inside(base: Path, name: str) -> Path | None:
    """`base/name` if it is an existing file inside `base` once every link and `..` is resolved, else None."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    root = base.resolve()
    try:
        target = (root / name).resolve()
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def _read_beginning(name: str, data: bytes, remaining: int | None, limits: Limits, max_lines: int) -> str:
    """An uploaded score → the continuation context, converted in a bounded worker process; 413 naming the limit
    when one is hit, 400 with the converter's one-line reason when the file is malformed."""
    with tempfile.TemporaryDirectory(prefix="notagen-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return continuation_context(path, remaining=remaining, max_lines=max_lines, limits=limits)
        except NotaGenError as error:
            # Name the user's file, not our temporary folders (the MIDI reader makes one of its own).
            message = str(error).replace(str(path), name).replace(folder + "/", "")
            message = re.sub(r"\S*notagen-(?:upload|midi)-[^/\s]*/", "", message)
            raise HTTPException(413 if isinstance(error, LimitError) else 400, " ".join(message.split())) from error


__all__ = ["create_app", "JobRequest", "PromptIn", "SamplingIn"]
