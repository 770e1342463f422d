"""``ASRModel``: NeMo's inference API (restore_from, transcribe, ...) over the plain-PyTorch runtime.

The module tree keeps NeMo's attribute names (``preprocessor``, ``encoder``, ``decoder``, ``joint``,
``ctc_decoder``), so a checkpoint's state dict loads with ``strict=True`` — every weight is accounted for.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from models import long_audio as la
from models.batching import PADDING_WASTE, length_batches
from models.checkpoint import Checkpoint, open_checkpoint
from models.encoders import build_encoder
from models.errors import CheckpointError, UnsupportedOptionError
from models.features import MelFrontend
from models.hypothesis import Hypothesis
from models.inputs import AudioItem, collate, expand, load_item
from models.long_audio import LongAudioOptions
from models.tokenizers import Tokenizer, build_tokenizer

log = logging.getLogger("aviary.models")


@dataclass
class TranscribeConfig:
    """NeMo's ``TranscribeConfig`` fields that matter at inference."""

    batch_size: int = 4
    return_hypotheses: bool = False
    num_workers: int | None = None
    channel_selector: int | str | None = None
    augmentor: Any = None
    timestamps: bool | None = None
    verbose: bool = True
    decoder_type: str | None = None  # aviary: per-call choice of a hybrid model's head
    long_audio: Any = None  # aviary: LongAudioOptions, a dict of overrides or a strategy name (None: model's)


def resolve_device(map_location: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` → cuda, then mps, then cpu (NeMo's ``restore_from`` default is cuda-else-cpu)."""
    if map_location is None or str(map_location) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(map_location)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "orthogonal_", "zeros_", "ones_", "constant_")
_init_lock = threading.RLock()


@contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build modules without random initialisation (seconds for large models); only for weights that are
    then loaded. Serialised by a lock because it patches ``torch.nn.init`` process-wide."""
    with _init_lock:
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in _INIT_FUNCTIONS:
                setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, fn in saved.items():
                setattr(torch.nn.init, name, fn)


def load_weights_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[list, list]:
    """Adopt the checkpoint tensors as the module's weights (no copy); float weights become float32."""
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    result = module.load_state_dict(floats, strict=False, assign=True)
    return list(result.missing_keys), list(result.unexpected_keys)


class ASRModel(torch.nn.Module):
    """Base class: loading, input handling and batching. Families add their heads in ``_build_heads``."""

    family: ClassVar[str] = "asr"
    # how transcribe() encodes long audio unless a call says otherwise (models.long_audio); assign to change
    long_audio: LongAudioOptions = LongAudioOptions()
    # packed execution of batches of different lengths where the encoder supports it (see encode()); a
    # packing model's transcribe() batches by count, not by length similarity. Assign False to compare.
    packed: bool = True

    def __init__(self, cfg: dict[str, Any], tokenizer: Tokenizer) -> None:
        super().__init__()
        self._cfg_dict = cfg
        self._cfg_view: DictConfig | None = None
        self.tokenizer = tokenizer
        self.preprocessor = MelFrontend.from_config(cfg["preprocessor"])
        self.encoder = build_encoder(cfg["encoder"])
        self._build_heads(cfg)

    # ---- construction -------------------------------------------------------------------------
    def _build_heads(self, cfg: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def cfg(self) -> DictConfig:
        # Built on first use: OmegaConf is slow on configs that carry 1000-entry vocabularies.
        if self._cfg_view is None:
            self._cfg_view = OmegaConf.create(self._cfg_dict)
        return self._cfg_view

    def _update_cfg(self, dotted: str, value: Any) -> None:
        """Record a change in the model's config (``model.cfg`` shows it), as NeMo's setters do."""
        node = self._cfg_dict
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        self._cfg_view = None

    @property
    def sample_rate(self) -> int:
        return int(self.preprocessor.sample_rate)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def decoder_types(self) -> tuple[str, ...]:
        """The heads this model can decode with, default first."""
        raise NotImplementedError

    @classmethod
    def restore_from(cls, restore_path: str | Path, map_location: str | torch.device | None = None,
                     strict: bool = True, return_config: bool = False, **_: Any) -> ASRModel | DictConfig:
        """Load a ``.nemo`` file (or an extracted checkpoint directory).

        Raises:
            CheckpointError: missing/corrupt/unsafe file or an unsupported architecture.
        """
        start = time.perf_counter()
        with open_checkpoint(restore_path) as ckpt:
            if return_config:
                return OmegaConf.create(ckpt.config)
            model = cls.from_checkpoint(ckpt, strict=strict)
        model.to(resolve_device(map_location))
        log.info("restored %s (%s) in %.2fs", Path(restore_path).name, model.family, time.perf_counter() - start)
        return model

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, strict: bool = True) -> ASRModel:
        from models.families import model_class_for

        target_cls = model_class_for(ckpt.target)
        if not (issubclass(target_cls, cls) or issubclass(cls, target_cls)):
            raise CheckpointError(f"{ckpt.source} holds a {ckpt.target}, not a {cls.__name__}")
        if target_cls is not cls and "from_checkpoint" in vars(target_cls):
            return target_cls.from_checkpoint(ckpt, strict=strict)  # families with their own loading (AED)
        tokenizer = build_tokenizer(ckpt.config, ckpt.resolve_artifact)
        with skip_weight_init():  # every weight is about to be replaced by the checkpoint's
            model = target_cls(ckpt.config, tokenizer)
        missing, unexpected = load_weights_into(model, ckpt.state_dict)
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{ckpt.source}: weights do not match the architecture in its config "
                f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
            )
        return model.eval()

    @classmethod
    def from_pretrained(cls, model_name: str, map_location: str | torch.device | None = None,
                        refresh_cache: bool = False, return_model_file: bool = False, **kwargs: Any) -> Any:
        """Resolve a catalog name, a Hugging Face repo id, an NGC name or a local path, then restore it."""
        from models.hub import resolve_pretrained

        path = resolve_pretrained(model_name, refresh_cache=refresh_cache)
        if return_model_file:
            return str(path)
        return cls.restore_from(path, map_location=map_location, **kwargs)

    @classmethod
    def list_available_models(cls) -> list[Any]:
        from models.catalog import list_available_models

        return list_available_models(cls)

    # ---- model changes (NeMo API) -----------------------------------------------------------------
    def change_attention_model(self, self_attention_model: str | None = None,
                               att_context_size: list[int] | None = None, update_config: bool = True) -> None:
        if not hasattr(self.encoder, "change_attention_model"):
            raise UnsupportedOptionError(f"{type(self.encoder).__name__} has no self-attention to change")
        self.encoder.change_attention_model(self_attention_model, att_context_size)
        self.encoder.to(self.device)
        if update_config:
            if self_attention_model is not None:
                self._update_cfg("encoder.self_attention_model", self_attention_model)
            if att_context_size is not None:
                self._update_cfg("encoder.att_context_size", list(att_context_size))

    def change_subsampling_conv_chunking_factor(self, subsampling_conv_chunking_factor: int,
                                                update_config: bool = True) -> None:
        if not hasattr(self.encoder, "change_subsampling_conv_chunking_factor"):
            raise UnsupportedOptionError(f"{type(self.encoder).__name__} has no conv subsampling to chunk")
        self.encoder.change_subsampling_conv_chunking_factor(subsampling_conv_chunking_factor)
        if update_config:
            self._update_cfg("encoder.subsampling_conv_chunking_factor", subsampling_conv_chunking_factor)

    def change_decoding_strategy(self, decoding_cfg: Any = None, decoder_type: str | None = None,
                                 verbose: bool = True) -> None:
        raise NotImplementedError

    def get_transcribe_config(self) -> TranscribeConfig:
        return TranscribeConfig()

    def info(self) -> dict[str, Any]:
        """A summary for listings (``GET /models``)."""
        return {
            "target": str(self._cfg_dict.get("target", "")),
            "family": self.family,
            "encoder": type(self.encoder).__name__,
            "decoders": list(self.decoder_types),
            "sample_rate": self.sample_rate,
            "vocab_size": self.tokenizer.vocab_size,
            "num_parameters": sum(p.numel() for p in self.parameters()),
            "languages": None,
            "tasks": ["asr"],
        }

    # ---- inference ---------------------------------------------------------------------------------
    def _path(self, decoder_type: str | None):
        raise NotImplementedError

    @property
    def packs(self) -> bool:
        """Whether batches run packed (:attr:`packed` on and the encoder supports it)."""
        return self.packed and bool(getattr(self.encoder, "packable", False))

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms ``[B, N]`` → encoder states ``[B, D, T']`` and their lengths.

        With :attr:`packs`, a batch is split into groups of similar length (≤ 15 % padding each) that get
        their own features and subsampling; the encoder blocks then run on the groups' valid frames packed
        together (``ConformerEncoder.forward_groups``). Same values as one utterance at a time.
        """
        if audio.shape[0] > 1 and self.packs:
            return self._encode_packed(audio, lengths)
        feats, feat_len = self.preprocessor(audio.float(), lengths)
        return self.encoder(feats, feat_len)

    def _encode_packed(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        groups = length_batches(lengths.tolist(), batch_size=len(lengths))
        inputs = []
        for group in groups:
            rows = torch.tensor(group, device=audio.device)
            n = int(lengths[rows].max())
            inputs.append(self.preprocessor(audio[rows, :n].float(), lengths[rows]))
        enc, enc_len = self.encoder.forward_groups(inputs)
        order = [i for group in groups for i in group]
        if order == sorted(order):
            return enc, enc_len
        inverse = torch.empty(len(order), dtype=torch.int64)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        inverse = inverse.to(enc.device)
        return enc[inverse], enc_len[inverse]

    @torch.inference_mode()
    def transcribe_items(self, items: list[AudioItem], return_hypotheses: bool = True,
                         timestamps: bool = False, decoder_type: str | None = None,
                         long_audio: LongAudioOptions | dict[str, Any] | str | None = None) -> list[Hypothesis]:
        """Decode one batch of loaded utterances (the service's entry point).

        ``long_audio`` (default ``self.long_audio``) decides how each utterance is encoded; utterances over
        its threshold are encoded one at a time. Each hypothesis records the choice in ``strategy``.
        """
        path = self._path(decoder_type)
        options = la.resolve_options(long_audio, self.long_audio)
        hyps: list[Hypothesis] = [None] * len(items)  # type: ignore[list-item]
        for strategy, idx in la.plan(self, [it.num_samples / self.sample_rate for it in items], options):
            audio, lengths = collate([items[i] for i in idx], self.device)
            enc, enc_len = la.encode(self, audio, lengths, strategy, options)
            for i, hyp in zip(idx, path(enc, enc_len, return_hypotheses, timestamps)):
                hyp.strategy, hyps[i] = strategy, hyp
        return hyps

    def _resolve_config(self, override_config: TranscribeConfig | None, **kwargs: Any) -> TranscribeConfig:
        config = copy.copy(override_config) if override_config is not None else TranscribeConfig()
        if override_config is None:
            for key, value in kwargs.items():
                if hasattr(config, key):
                    setattr(config, key, value)
        if config.timestamps:
            config.return_hypotheses = True  # NeMo forces hypotheses when timestamps are asked for
        if config.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return config

    def transcribe(self, audio: Any, batch_size: int = 4, return_hypotheses: bool = False,
                   num_workers: int = 0, channel_selector: Any = None, augmentor: Any = None,
                   verbose: bool = True, timestamps: bool | None = None,
                   override_config: TranscribeConfig | None = None, decoder_type: str | None = None,
                   long_audio: LongAudioOptions | dict[str, Any] | str | None = None, **_: Any) -> list[Any]:
        """Transcribe paths, manifests, arrays or tensors (mixed lists too); results in input order.

        Returns plain strings, or :class:`Hypothesis` objects with ``return_hypotheses=True`` (or
        ``timestamps=True``). Utterances are batched by length internally; results do not depend on it.

        ``long_audio`` (aviary): how to encode long files without running out of memory — a
        :class:`~models.long_audio.LongAudioOptions`, a dict of overrides of ``self.long_audio`` (e.g.
        ``{"threshold_s": 60}``) or a strategy name (``"auto"``, ``"full"``, ``"local_attention"``,
        ``"chunked"``). By default (``self.long_audio``, strategy ``auto``) files longer than its
        ``threshold_s`` use local attention (Conformer ``rel_pos`` encoders) or chunked encoding (others).
        """
        config = self._resolve_config(override_config, batch_size=batch_size, return_hypotheses=return_hypotheses,
                                      channel_selector=channel_selector, timestamps=timestamps,
                                      verbose=verbose, decoder_type=decoder_type, long_audio=long_audio)
        self._path(config.decoder_type)  # fail fast on an unsupported decoder
        sources = expand(audio)
        items = [load_item(s, self.sample_rate, i, config.channel_selector) for i, s in enumerate(sources)]
        results: list[Any] = [None] * len(items)
        waste = float("inf") if self.packs else PADDING_WASTE  # packed: padding costs no encoder work
        for idx in length_batches([it.num_samples for it in items], config.batch_size, waste):
            for i, out in zip(idx, self._transcribe_batch([items[i] for i in idx], config)):
                results[i] = out
        return results

    def transcribe_generator(self, audio: Any, override_config: TranscribeConfig | None = None
                             ) -> Iterator[list[Any]]:
        """Yield the results of each batch of ``config.batch_size`` inputs, in input order."""
        config = self._resolve_config(override_config)
        sources = expand(audio)
        for start in range(0, len(sources), config.batch_size):
            chunk = sources[start:start + config.batch_size]
            items = [load_item(s, self.sample_rate, start + i, config.channel_selector) for i, s in enumerate(chunk)]
            yield self._transcribe_batch(items, config)

    def _transcribe_batch(self, items: list[AudioItem], config: TranscribeConfig) -> list[Any]:
        extra = {"long_audio": config.long_audio} if config.long_audio is not None else {}  # AED: none
        hyps = self.transcribe_items(items, bool(config.return_hypotheses), bool(config.timestamps),
                                     config.decoder_type, **extra)
        return hyps if config.return_hypotheses else [h.text for h in hyps]
