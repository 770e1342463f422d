"""Reading ``.nemo`` checkpoints: a tar (or gzipped tar) of config, weights and artifacts.

The archive comes from strangers on the internet, so extraction is strict: only regular files and
directories, nothing that escapes the extraction directory, and weights are read with
``torch.load(weights_only=True)`` so no pickled code ever runs.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from models.errors import CheckpointError

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
ASR_TTS_TARGET = "ASRWithTTSModel"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster


@dataclass
class Checkpoint:
    """An opened checkpoint. ``directory`` holds the extracted artifacts until :meth:`close`."""

    source: Path
    directory: Path
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    _cleanup_dir: Path | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return str(self.config.get("target") or "")

    def resolve_artifact(self, ref: str | None) -> Path | None:
        """A config artifact reference → a local file (NeMo's ``register_artifact`` rules)."""
        if not ref:
            return None
        ref = str(ref)
        if ref.startswith("nemo:"):
            candidate = self.directory / ref[5:]
            return candidate if candidate.is_file() else None
        if Path(ref).is_file():
            return Path(ref)
        # Older checkpoints keep training-time paths; the artifact sits in the archive by basename.
        for candidate in self.directory.iterdir():
            name = candidate.name
            if name == Path(ref).name or name.endswith("_" + Path(ref).name):
                return candidate
        return None

    def subset(self, prefix: str) -> dict[str, torch.Tensor]:
        """Weights under ``prefix.`` with the prefix removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.state_dict.items() if k.startswith(p)}

    def close(self) -> None:
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)
            self._cleanup_dir = None

    def __enter__(self) -> Checkpoint:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_tar(path: Path) -> tarfile.TarFile:
    # NeMo >= 1.7 writes plain tar; older checkpoints are gzipped.
    for mode in ("r:", "r:gz"):
        try:
            return tarfile.open(path, mode)
        except tarfile.ReadError:
            continue
    raise CheckpointError(f"{path} is not a .nemo archive (neither tar nor tar.gz)")


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise CheckpointError(f"refusing archive member {member.name!r}: it escapes the checkpoint")
        if member.islnk() or member.issym() or member.isdev() or member.isfifo():
            raise CheckpointError(f"refusing archive member {member.name!r}: links and devices are not allowed")
        if not (member.isfile() or member.isdir()):
            raise CheckpointError(f"refusing archive member {member.name!r}: not a regular file")
        target = (dest / member.name).resolve()
        if dest.resolve() not in target.parents and target != dest.resolve():
            raise CheckpointError(f"refusing archive member {member.name!r}: it escapes the checkpoint")
        members.append(member)
    return members


def extract_archive(path: Path, dest: Path) -> None:
    """Safely extract a ``.nemo`` archive into ``dest``."""
    try:
        with _open_tar(path) as tar:
            members = _safe_members(tar, dest)
            for member in members:
                if member.isdir():
                    (dest / member.name).mkdir(parents=True, exist_ok=True)
                    continue
                out = dest / member.name
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise CheckpointError(f"cannot read archive member {member.name!r}")
                with src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f, length=1 << 22)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: the archive is truncated or corrupt ({exc})") from exc


def _legacy_to_target(node: Any) -> Any:
    """Old configs say ``cls:`` + ``params:``; convert them to the ``_target_`` form."""
    if isinstance(node, dict):
        node = {k: _legacy_to_target(v) for k, v in node.items()}
        if "cls" in node and "_target_" not in node and isinstance(node.get("params", {}), dict):
            params = node.pop("params", {}) or {}
            node = {"_target_": node.pop("cls"), **node, **params}
        return node
    if isinstance(node, list):
        return [_legacy_to_target(v) for v in node]
    return node


def load_config(path: Path) -> dict[str, Any]:
    """Read ``model_config.yaml`` and resolve ``${...}`` interpolations."""
    from omegaconf import OmegaConf

    try:
        text = path.read_text()
        cfg = yaml.load(text, Loader=_YAML_LOADER)
        if isinstance(cfg, dict) and "model" in cfg and "target" not in cfg:
            cfg = cfg["model"]
        if "${" in text:  # interpolations need OmegaConf; saved configs rarely have them (it is slow)
            cfg = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except Exception as exc:
        raise CheckpointError(f"{path.name}: unreadable model config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path.name}: the model config is not a mapping")
    return _legacy_to_target(cfg)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        # One sequential read; the tensors then become the model's weights (no further copy).
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path.name}: cannot read the weights safely ({exc})") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path.name}: expected a state dict of tensors")
    return dict(sd)


def _unwrap_asr_tts(config: dict[str, Any], sd: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Hybrid ASR-TTS checkpoints nest a complete ASR model under ``asr_model``."""
    asr_cfg = config.get("asr_model")
    if not isinstance(asr_cfg, dict) or not asr_cfg.get("target"):
        raise CheckpointError("this ASR-TTS checkpoint has no usable 'asr_model' section")
    prefix = "asr_model."
    return asr_cfg, {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a ``.nemo`` file or an extracted checkpoint directory.

    Raises:
        CheckpointError: if the path is missing, not a checkpoint, unsafe or corrupt.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    owns = path.is_file()
    scratch = Path(tempfile.mkdtemp(prefix="aviary-nemo-")) if owns else None
    try:
        if scratch is not None:
            extract_archive(path, scratch)
        directory = _find_root(scratch or path)
        config = load_config(directory / CONFIG_NAME)
        state_dict = load_weights(directory / WEIGHTS_NAME)
        if str(config.get("target", "")).endswith(ASR_TTS_TARGET):
            config, state_dict = _unwrap_asr_tts(config, state_dict)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Checkpoint(path, directory, config, state_dict, _cleanup_dir=scratch)


def _find_root(directory: Path) -> Path:
    """The folder that holds ``model_config.yaml`` (archives sometimes nest one level)."""
    if (directory / CONFIG_NAME).is_file():
        if not (directory / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"the checkpoint has no {WEIGHTS_NAME}")
        return directory
    found = sorted(directory.glob(f"*/{CONFIG_NAME}"))
    if found:
        return _find_root(found[0].parent)
    raise CheckpointError(f"not a NeMo checkpoint: {CONFIG_NAME} is missing")
