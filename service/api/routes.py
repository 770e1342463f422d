"""The HTTP routes. Each one parses, hands one typed request to the engine, and shapes the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from service.api.auth import require_admin_key, require_api_key
from service.api.disconnect import until_disconnected
from service.api.manifest import NDJSON, ndjson_lines, read_manifest_request, wants_ndjson
from service.api.parsing import read_transcribe_request
from service.api.schemas import (
    ManifestResponse,
    ModelCard,
    ModelList,
    TranscriptionResponse,
    UnloadResult,
    error_responses,
    manifest_request_body,
    transcribe_request_body,
)
from service.engine import Engine
from service.errors import NotReady
from service.manifest import ManifestRun
from service.results import outcome_body

router = APIRouter()


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
API_KEY = [Depends(require_api_key)]
ADMIN_KEY = [Depends(require_admin_key)]


@router.post(
    "/transcribe",
    summary="Transcribe one or more audio inputs",
    response_model=TranscriptionResponse,
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 500, 502, 503, 504),
    openapi_extra={"requestBody": transcribe_request_body()},
    dependencies=API_KEY,
)
async def transcribe(request: Request, engine: EngineDep) -> Response:
    """Multipart audio parts named `files` (or one `file`), or JSON `{"audio": [...]}`; one result per
    input, in input order. Headers `x-queue-time` / `x-inference-time` give seconds spent queued / computing."""
    job = await read_transcribe_request(request, engine.settings)
    outcome = await until_disconnected(request, engine.batcher.submit(job))
    headers = {
        "x-queue-time": f"{outcome.queue_seconds:.6f}",
        "x-inference-time": f"{outcome.inference_seconds:.6f}",
    }
    return JSONResponse(outcome_body(outcome), headers=headers)


@router.post(
    "/transcribe/manifest",
    summary="Transcribe or translate the entries of a NeMo manifest",
    response_model=ManifestResponse,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 500, 502, 503),
    openapi_extra={"requestBody": manifest_request_body()},
    dependencies=API_KEY,
)
async def transcribe_manifest(request: Request, engine: EngineDep) -> Response:
    """JSON Lines / a JSON array of entries (`audio_filepath`, `offset`, `duration`, `taskname`, `source_lang`,
    `target_lang`, `pnc`, `answer`...), options as query parameters; or multipart with a `manifest` part and
    the audio as `files` parts. With `Accept: application/x-ndjson` one result line per entry streams back in
    manifest order as batches finish, then a `{"summary": ...}` line; entries long enough for a long-audio
    strategy also get `{"progress": {"index", "audio_filepath", "strategy", "fraction"}}` lines (10 % steps)
    while they are encoded. Otherwise one JSON document."""
    job = await read_manifest_request(request, engine.settings)
    streaming = wants_ndjson(request)
    run = await ManifestRun.open(engine.batcher, job, progress=streaming)
    if streaming:
        # The background close also covers a client that leaves before the first line (the stream never starts).
        return StreamingResponse(ndjson_lines(run), media_type=NDJSON, background=BackgroundTask(run.close))
    return JSONResponse(await until_disconnected(request, run.collect()))


@router.get(
    "/models", summary="Available models", response_model=ModelList, responses=error_responses(401),
    dependencies=API_KEY,
)
def list_models(engine: EngineDep) -> dict[str, Any]:
    """Every available model — configured ones, then the pretrained catalog — whether loaded or cached or
    not. Never touches the network. (A plain ``def``: FastAPI runs it in a thread, since describing models
    reads checkpoint configs and the download cache from disk.)"""
    return {"default": engine.registry.default, "models": engine.describe_models()}


@router.post(
    "/models/{name:path}/load", summary="Download (if needed), load and warm a model", response_model=ModelCard,
    responses=error_responses(401, 403, 404, 502, 503), dependencies=ADMIN_KEY,
)
async def load_model(name: str, engine: EngineDep, pin: bool = False) -> dict[str, Any]:
    """Returns the model's card once it is warm. `pin=true` keeps it loaded (exempt from the idle TTL and
    the LRU) until `DELETE /models/{name}`. Hub models are downloaded first unless cached."""
    return await engine.load_model(name, pin=pin)


@router.delete(
    "/models/{name:path}", summary="Unload a model", response_model=UnloadResult,
    responses=error_responses(401, 403, 404, 409), dependencies=ADMIN_KEY,
)
async def unload_model(name: str, engine: EngineDep) -> dict[str, Any]:
    """Frees the model's memory now. A model that is not loaded is a no-op (`unloaded: false`); one that
    requests are using answers 409. The next request for it loads it again."""
    return await engine.unload_model(name)


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: 503 until the preloaded models are warm", responses=error_responses(503))
async def ready(engine: EngineDep) -> dict[str, Any]:
    if not engine.ready:
        detail = f"preloading failed: {engine.preload_error}" if engine.preload_error else "preloading models"
        raise NotReady(f"not ready: {detail} ({', '.join(engine.settings.preload)})")
    return {"status": "ready", "loaded": engine.pool.loaded()}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(engine: EngineDep) -> Response:
    body, content_type = engine.metrics.render()
    return Response(body, media_type=content_type)
