#!/usr/bin/env python
"""Generates ``models/catalog.json``: the pretrained names ``ASRModel.from_pretrained`` understands.

Dev-only: runs in the NeMo virtualenv, never at run time or test time:

    /work/nemo-venv/bin/python tools/make_catalog.py [--out models/catalog.json]

Sources, in order (a name already taken keeps its first entry, as NeMo's exact-name lookup would):
  1. NeMo's own ``list_available_models()`` of every ``ASRModel`` subclass, walking the subclass tree the
     way ``ASRModel.list_available_models`` does (the subclass that lists an entry is its class);
  2. older NGC names that NeMo's documentation still uses but NeMo 3.0 no longer lists
     (``QuartzNet15x5Base-En`` and the QuartzNet/Citrinet NGC family, as listed by NeMo 1.x);
  3. the Hugging Face checkpoints of NeMo's model tables (Parakeet, Canary): their location is the
     ``https://huggingface.co/<repo>`` URL and the repo id is an alias.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"
EU25 = ["bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "hr", "hu", "it", "lt", "lv", "mt", "nl",
        "pl", "pt", "ro", "ru", "sk", "sl", "sv", "uk"]
EN_DE_ES_FR = ["en", "de", "es", "fr"]

# (name, NGC path after /models/nvidia/, class) — listed by NeMo 1.x EncDecCTCModel, dropped since.
LEGACY_NGC = [
    ("QuartzNet15x5Base-En", "nemospeechmodels/versions/1.0.0a5/files/QuartzNet15x5Base-En.nemo"),
    *[(name, f"nemo/{name}/versions/1.0.0rc1/files/{name}.nemo")
      for name in (f"stt_{lang}_quartznet15x5" for lang in ("en", "ca", "it", "fr", "es", "de", "pl", "ru"))],
    ("stt_zh_citrinet_512", "nemo/stt_zh_citrinet_512/versions/1.0.0rc1/files/stt_zh_citrinet_512.nemo"),
    ("stt_zh_citrinet_1024_gamma_0_25",
     "nemo/stt_zh_citrinet_1024_gamma_0_25/versions/1.0.0/files/stt_zh_citrinet_1024_gamma_0_25.nemo"),
]

# (repo, class, languages, description) — NeMo's Hugging Face ASR checkpoints.
HF_MODELS = [
    ("nvidia/parakeet-tdt-0.6b-v2", "EncDecRNNTBPEModel", ["en"],
     "Parakeet TDT 0.6B v2: FastConformer-TDT, English with punctuation, capitalization and timestamps."),
    ("nvidia/parakeet-tdt-0.6b-v3", "EncDecRNNTBPEModel", EU25,
     "Parakeet TDT 0.6B v3: FastConformer-TDT, 25 European languages with automatic language detection."),
    ("nvidia/parakeet-ctc-0.6b", "EncDecCTCModelBPE", ["en"],
     "Parakeet CTC 0.6B: FastConformer-CTC, English."),
    ("nvidia/parakeet-ctc-1.1b", "EncDecCTCModelBPE", ["en"],
     "Parakeet CTC 1.1B: FastConformer-CTC, English."),
    ("nvidia/parakeet-rnnt-0.6b", "EncDecRNNTBPEModel", ["en"],
     "Parakeet RNNT 0.6B: FastConformer-RNNT, English."),
    ("nvidia/parakeet-rnnt-1.1b", "EncDecRNNTBPEModel", ["en"],
     "Parakeet RNNT 1.1B: FastConformer-RNNT, English."),
    ("nvidia/parakeet-tdt-1.1b", "EncDecRNNTBPEModel", ["en"],
     "Parakeet TDT 1.1B: FastConformer-TDT, English."),
    ("nvidia/parakeet-tdt_ctc-1.1b", "EncDecHybridRNNTCTCBPEModel", ["en"],
     "Parakeet TDT-CTC 1.1B: hybrid FastConformer TDT + CTC, English with punctuation and capitalization."),
    ("nvidia/parakeet-tdt_ctc-110m", "EncDecHybridRNNTCTCBPEModel", ["en"],
     "Parakeet TDT-CTC 110M: hybrid FastConformer TDT + CTC, English with punctuation and capitalization."),
    ("nvidia/parakeet-tdt_ctc-0.6b-ja", "EncDecHybridRNNTCTCBPEModel", ["ja"],
     "Parakeet TDT-CTC 0.6B: hybrid FastConformer TDT + CTC, Japanese."),
    ("nvidia/canary-1b", "EncDecMultiTaskModel", EN_DE_ES_FR,
     "Canary 1B: multitask AED (ASR and speech translation), English, German, Spanish, French."),
    ("nvidia/canary-1b-flash", "EncDecMultiTaskModel", EN_DE_ES_FR,
     "Canary 1B Flash: fast multitask AED (ASR, translation, timestamps), English, German, Spanish, French."),
    ("nvidia/canary-180m-flash", "EncDecMultiTaskModel", EN_DE_ES_FR,
     ("Canary 180M Flash: small multitask AED (ASR, translation, timestamps) for English, German, Spanish, "
     "French.")),
    ("nvidia/canary-1b-v2", "EncDecMultiTaskModel", EU25,
     "Canary 1B v2: multitask AED, ASR and translation to/from English in 25 European languages."),
]

# NeMo's name prefixes that are not ISO 639-1 codes.
LANG_FIXUPS = {"by": ["be"], "ua": ["uk"], "enes": ["en", "es"], "multilingual": ["mul"]}


def languages_of(name: str) -> list[str]:
    """Languages from NeMo's naming scheme (``stt_<lang>_...``); English for the unprefixed English models."""
    match = re.match(r"^(?:stt|vad)_([a-z]+)_", name)
    if match is None:
        return ["en"] if name.endswith("-En") or name.startswith(("parakeet", "asr_")) else []
    code = match.group(1)
    return LANG_FIXUPS.get(code, [code])


def walk_nemo_catalog() -> list[dict[str, Any]]:
    """``list_available_models()`` of every ``ASRModel`` subclass, walking the tree as NeMo does."""
    import nemo.collections.asr as nemo_asr  # noqa: F401  (registers every ASR model class)
    from nemo.collections.asr.models import ASRModel

    found: dict[str, dict[str, Any]] = {}

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            walk(sub)
            for info in sub.list_available_models() or []:
                klass = info.class_ or sub
                found.setdefault(info.pretrained_model_name, {
                    "pretrained_model_name": info.pretrained_model_name,
                    "description": " ".join(str(info.description).split()),
                    "location": info.location,
                    "class_name": klass.__name__,
                    "aliases": list(info.aliases or []),
                    "languages": languages_of(info.pretrained_model_name),
                })

    walk(ASRModel)
    return sorted(found.values(), key=lambda e: e["pretrained_model_name"].lower())


def legacy_entries() -> list[dict[str, Any]]:
    return [{
        "pretrained_model_name": name,
        "description": f"For details about this model, please visit "
                       f"https://ngc.nvidia.com/catalog/models/nvidia:nemo:{name} (listed by NeMo 1.x).",
        "location": f"{NGC}/{path}",
        "class_name": "EncDecCTCModel",
        "aliases": [],
        "languages": languages_of(name),
    } for name, path in LEGACY_NGC]


def hf_entries(taken: set[str]) -> list[dict[str, Any]]:
    """HF checkpoints: the short name when free (else the repo id), the repo id as an alias."""
    entries = []
    for repo, klass, langs, description in HF_MODELS:
        short = repo.split("/", 1)[1]
        name = repo if short in taken else short
        entries.append({
            "pretrained_model_name": name,
            "description": f"{description} https://huggingface.co/{repo}",
            "location": f"https://huggingface.co/{repo}",
            "class_name": klass,
            "aliases": [] if name == repo else [repo],
            "languages": list(langs),
        })
    return entries


def build_catalog() -> dict[str, Any]:
    import nemo

    entries = walk_nemo_catalog()
    taken = {e["pretrained_model_name"] for e in entries}
    entries += [e for e in legacy_entries() if e["pretrained_model_name"] not in taken]
    taken |= {e["pretrained_model_name"] for e in entries}
    entries += hf_entries(taken)
    return {
        "generated_by": "tools/make_catalog.py",
        "nemo_version": nemo.__version__,
        "models": entries,
    }


def to_json(catalog: dict[str, Any]) -> str:
    """One entry per line: readable, and a regenerated catalog diffs line by line."""
    head = {k: v for k, v in catalog.items() if k != "models"}
    rows = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in catalog["models"])
    return json.dumps(head, ensure_ascii=False)[:-1] + ', "models": [\n' + rows + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "models" / "catalog.json")
    args = parser.parse_args(argv)
    catalog = build_catalog()
    args.out.write_text(to_json(catalog))
    print(f"wrote {len(catalog['models'])} entries to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
