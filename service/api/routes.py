"""The HTTP routes. Each one parses, hands one typed request to the engine, and shapes the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api.disconnect import until_disconnected
from service.api.parsing import read_transcribe_request
from service.api.schemas import ModelList, TranscriptionResponse, error_responses, transcribe_request_body
from service.engine import Engine
from service.errors import NotReady
from service.results import outcome_body

router = APIRouter()


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


@router.post(
    "/transcribe",
    summary="Transcribe one or more audio inputs",
    response_model=TranscriptionResponse,
    responses=error_responses(400, 404, 413, 415, 422, 429, 500, 503, 504),
    openapi_extra={"requestBody": transcribe_request_body()},
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


@router.get("/models", summary="Available models", response_model=ModelList)
def list_models(engine: EngineDep) -> dict[str, Any]:
    """Every available model, whether loaded or not. (A plain ``def``: FastAPI runs it in a thread, since
    describing an unloaded model reads its checkpoint's config from disk.)"""
    return {"default": engine.registry.default, "models": engine.describe_models()}


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
