"""``aviary``: ``serve`` the API, ``transcribe`` files in-process, ``pull`` hub models, or list the ``models``.

Options only override :class:`Settings` fields; everything else comes from ``AVIARY_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.errors import AviaryError, ConfigurationError
from service.settings import Settings

# CLI option → Settings field, for the options shared by every command.
_COMMON = {
    "model_dir": "--model-dir", "models": "--models", "device": "--device", "backend": "--backend",
    "cache_dir": "--cache-dir",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aviary", description="REST inference for NeMo ASR checkpoints.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-dir", help="directory of .nemo files (AVIARY_MODEL_DIR)")
    common.add_argument("--models", help="name=path pairs, comma-separated (AVIARY_MODELS)")
    common.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (AVIARY_DEVICE)")
    common.add_argument("--cache-dir", help="where downloaded checkpoints are kept (AVIARY_CACHE_DIR)")
    common.add_argument("--backend", choices=["runtime", "echo"], help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP API")
    serve.add_argument("--host", help="interface to bind (AVIARY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (AVIARY_PORT, default 8000)")
    serve.add_argument("--preload", help="models to load at start-up, comma-separated (AVIARY_PRELOAD)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="(AVIARY_LOG_LEVEL)")

    tr = sub.add_parser("transcribe", parents=[common], help="transcribe files in-process, without a server")
    tr.add_argument("files", nargs="+", type=Path, metavar="FILE")
    tr.add_argument("--model", "-m", help="model name (default: AVIARY_DEFAULT_MODEL or the first one)")
    tr.add_argument("--timestamps", action="store_true", help="print word and segment times")
    tr.add_argument("--json", action="store_true", help="print the API's JSON response")

    pull = sub.add_parser("pull", parents=[common], help="download hub models into the cache (for offline use)")
    pull.add_argument("names", nargs="+", metavar="NAME",
                      help="catalog name, org/name Hugging Face repo (optionally @revision), or an AVIARY_MODELS entry")
    pull.add_argument("--refresh", action="store_true", help="download again even when cached")

    models = sub.add_parser("models", parents=[common], help="list configured models, the catalog and the cache")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings with the command line's overrides applied."""
    fields = [*_COMMON, "host", "port", "preload", "log_level"]
    overrides = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    for field in ("model_dir", "cache_dir"):
        if field in overrides:
            overrides[field] = Path(overrides[field])
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aviary`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        commands = {"serve": _serve, "transcribe": _transcribe, "pull": _pull, "models": _models}
        command = commands[args.command]
        return command(settings, args)
    except ValidationError as exc:
        print(f"aviary: invalid settings:\n{exc}", file=sys.stderr)
    except ConfigurationError as exc:
        print(f"aviary: {exc}", file=sys.stderr)
    return 2


def _serve(settings: Settings, _: argparse.Namespace) -> int:
    import uvicorn

    from service.api import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def _transcribe(settings: Settings, args: argparse.Namespace) -> int:
    try:
        body = asyncio.run(_transcribe_files(settings, args.files, args.model, args.timestamps))
    except AviaryError as exc:
        print(f"aviary: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    for result in body["results"]:
        prefix = f"{result['filename']}: " if len(body["results"]) > 1 else ""
        print(prefix + result["text"])
        for word in result.get("timestamps", {}).get("word", []):
            print(f"  {word['start']:8.2f} {word['end']:8.2f}  {word['word']}")
    return 0


async def _transcribe_files(settings: Settings, files: list[Path], model: str | None, timestamps: bool) -> dict[str, Any]:
    from service.audio import AudioInput
    from service.batching import TranscribeRequest
    from service.engine import Engine
    from service.errors import InvalidRequest
    from service.pool import DecodeOptions
    from service.results import outcome_body

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InvalidRequest(f"no such file: {', '.join(missing)}")
    inputs = [AudioInput(label=str(f), filename=f.name, data=f.read_bytes()) for f in files]
    engine = Engine(settings)
    await engine.start(preload=False)
    try:
        request = TranscribeRequest(inputs, model, DecodeOptions(None, timestamps))
        return outcome_body(await engine.batcher.submit(request))
    finally:
        await engine.close()


def _pull(settings: Settings, args: argparse.Namespace) -> int:
    """Download each name (an ``AVIARY_MODELS`` entry stands for its location); print one path per line.
    Every name is tried; the exit status is 1 when any failed."""
    from models import hub
    from models.errors import RuntimeErrorBase
    from service.pool.hub import configure_cache

    configure_cache(settings)
    failed = 0
    for name in args.names:
        try:
            print(hub.pull(settings.models.get(name, name), refresh=args.refresh), flush=True)
        except RuntimeErrorBase as exc:
            print(f"aviary: {name}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from service.engine import Engine

    engine = Engine(settings)
    engine.decode_executor.shutdown()
    cards = engine.describe_models()
    cache = _cache_listing()
    if args.json:
        print(json.dumps({"default": engine.registry.default, "models": cards, **cache}, indent=2))
        return 0
    configured = [card for card in cards if card["source"] != "pretrained"]
    if not configured:
        print("no models configured: set AVIARY_MODEL_DIR or AVIARY_MODELS", file=sys.stderr)
    _print_table("configured", [
        ("*" if c["default"] else " ", c["name"], _kind(c), c["source"], c["location"]) for c in configured
    ])
    catalog = [card for card in cards if card["source"] == "pretrained"]
    _print_table("catalog (+: cached)", [
        ("+" if c["cached"] else " ", c["name"], _kind(c), c["hub"] or "", ",".join(c["languages"] or []))
        for c in catalog
    ])
    _print_table(f"cache ({cache['cache_dir']})", [
        (" ", m["name"], m["source"], m["revision"], f"{m['size_bytes'] / 2**20:.1f} MiB", m["path"])
        for m in cache["cache"]
    ])
    return 0


def _cache_listing() -> dict[str, Any]:
    from models import hub

    cached = [{**dataclasses.asdict(m), "path": str(m.path)} for m in hub.cached_models()]
    return {"cache_dir": str(hub.cache_dir()), "cache": cached}


def _kind(card: dict[str, Any]) -> str:
    return (card["architecture"] or "?").rsplit(".", 1)[-1]


def _print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    """``title:`` then one line per row: a one-character mark, then aligned columns."""
    if not rows:
        return
    print(f"{title}:")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for mark, *cells in rows:
        aligned = "  ".join(f"{cell:{width}}" for cell, width in zip(cells[:-1], widths[1:]))
        print(f"{mark} {aligned}  {cells[-1]}".rstrip())


if __name__ == "__main__":
    sys.exit(main())
