"""The checkpoint families: CTC, RNNT/TDT and hybrid RNNT(TDT)+CTC, dispatched on the config's ``target``."""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import OmegaConf

from models.asr_model import ASRModel
from models.decoders.ctc import CTCHead
from models.decoders.rnnt import RNNTJoint, build_predictor
from models.errors import CheckpointError, UnsupportedOptionError
from models.heads import CTCPath, TimestampOptions, TransducerPath


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _merge(base: dict[str, Any], update: Any) -> dict[str, Any]:
    merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(_plain(update)))
    return OmegaConf.to_container(merged, resolve=True)


def _ctc_head_config(section: dict[str, Any], enc_dim: int, vocab: list[str]) -> dict[str, Any]:
    """Fill the values NeMo fills at construction time (``feat_in``, ``num_classes``, ``vocabulary``)."""
    cfg = copy.deepcopy(section)
    if not cfg.get("feat_in") or cfg["feat_in"] < 1:
        cfg["feat_in"] = enc_dim
    if not cfg.get("num_classes") or cfg["num_classes"] < 1:
        cfg["num_classes"] = len(vocab)
    cfg.setdefault("vocabulary", vocab)
    return cfg


class CTCMixin:
    def _ctc_path(self, head_attr: str, decoding: dict[str, Any]) -> CTCPath:
        times = TimestampOptions.from_decoding(decoding, self.preprocessor.window_stride,
                                               self.encoder.subsampling_factor)
        return CTCPath(getattr(self, head_attr), self.tokenizer, decoding, times)


class EncDecCTCModel(CTCMixin, ASRModel):
    """CTC models: QuartzNet/Jasper/Citrinet, Conformer/FastConformer/Parakeet CTC."""

    family = "ctc"

    def _build_heads(self, cfg: dict[str, Any]) -> None:
        head_cfg = _ctc_head_config(cfg["decoder"], self.encoder.output_dim, self.tokenizer.vocabulary)
        self.decoder = CTCHead.from_config(head_cfg)
        self._decoding_cfg = _plain(cfg.get("decoding"))
        self._ctc = self._ctc_path("decoder", self._decoding_cfg)

    @property
    def decoder_types(self) -> tuple[str, ...]:
        return ("ctc",)

    def _path(self, decoder_type: str | None) -> CTCPath:
        if decoder_type not in (None, "default", "ctc"):
            raise UnsupportedOptionError(f"this CTC model has no {decoder_type!r} decoder; use 'ctc'")
        return self._ctc

    def change_decoding_strategy(self, decoding_cfg: Any = None, decoder_type: str | None = None,
                                 verbose: bool = True) -> None:
        self._path(decoder_type)
        self._decoding_cfg = _merge(self._decoding_cfg, decoding_cfg)
        self._ctc = self._ctc_path("decoder", self._decoding_cfg)
        self._update_cfg("decoding", self._decoding_cfg)


class EncDecCTCModelBPE(EncDecCTCModel):
    pass


def tdt_durations(cfg: dict[str, Any]) -> list[int] | None:
    decoding = cfg.get("decoding") or {}
    loss = cfg.get("loss") or {}
    if decoding.get("model_type") != "tdt" and loss.get("loss_name") != "tdt":
        return None
    # NeMo copies the loss's durations into the decoding config, so the loss's win.
    durations = (loss.get("tdt_kwargs") or {}).get("durations") or decoding.get("durations")
    if not durations:
        raise CheckpointError("a TDT checkpoint without 'durations' in its decoding or loss config")
    return list(durations)


def multiblank_durations(cfg: dict[str, Any]) -> list[int] | None:
    loss = cfg.get("loss") or {}
    if loss.get("loss_name") != "multiblank_rnnt":
        return None
    durations = (loss.get("multiblank_rnnt_kwargs") or {}).get("big_blank_durations") or (
        (cfg.get("decoding") or {}).get("big_blank_durations"))
    if not durations:
        raise CheckpointError("a multi-blank RNNT checkpoint without 'big_blank_durations' in its loss config")
    return list(durations)


class EncDecRNNTModel(ASRModel):
    """Transducers: RNNT, and TDT when the config says ``model_type: tdt``."""

    family = "rnnt"

    def _build_heads(self, cfg: dict[str, Any]) -> None:
        self.big_blank_durations = multiblank_durations(cfg)
        vocab_size = self.tokenizer.vocab_size
        dec_cfg = copy.deepcopy(cfg["decoder"])
        dec_cfg["vocab_size"] = dec_cfg.get("vocab_size") or vocab_size
        joint_cfg = copy.deepcopy(cfg["joint"])
        joint_cfg["num_classes"] = joint_cfg.get("num_classes") or vocab_size
        self.durations = tdt_durations(cfg)
        if self.durations:
            self.family = "tdt"
        self.decoder = build_predictor(dec_cfg)
        self.joint = RNNTJoint.from_config(joint_cfg)
        self._joint_log_softmax = joint_cfg.get("log_softmax")
        self._decoding_cfg = _plain(cfg.get("decoding"))
        self._rnnt = self._rnnt_path()

    def _rnnt_path(self) -> TransducerPath:
        times = TimestampOptions.from_decoding(self._decoding_cfg, self.preprocessor.window_stride,
                                               self.encoder.subsampling_factor)
        return TransducerPath(self.decoder, self.joint, self.tokenizer, self._decoding_cfg, times,
                              self.durations, self._joint_log_softmax, self.big_blank_durations)

    @property
    def decoder_types(self) -> tuple[str, ...]:
        return (self._rnnt.name,)

    def _path(self, decoder_type: str | None):
        if decoder_type not in (None, "default", "rnnt", "tdt"):
            raise UnsupportedOptionError(
                f"this {self._rnnt.name.upper()} model has no {decoder_type!r} decoder; "
                f"available: {', '.join(self.decoder_types)}"
            )
        return self._rnnt

    def change_decoding_strategy(self, decoding_cfg: Any = None, decoder_type: str | None = None,
                                 verbose: bool = True) -> None:
        self._path(decoder_type)
        self._decoding_cfg = _merge(self._decoding_cfg, decoding_cfg)
        self._rnnt = self._rnnt_path()
        self._update_cfg("decoding", self._decoding_cfg)


class EncDecRNNTBPEModel(EncDecRNNTModel):
    pass


class EncDecHybridRNNTCTCModel(CTCMixin, EncDecRNNTModel):
    """Transducer + auxiliary CTC head; decodes with the transducer unless switched to ``ctc``."""

    family = "hybrid"

    def _build_heads(self, cfg: dict[str, Any]) -> None:
        super()._build_heads(cfg)
        aux = cfg.get("aux_ctc") or {}
        head_cfg = _ctc_head_config(aux["decoder"], self.encoder.output_dim, self.tokenizer.vocabulary)
        self.ctc_decoder = CTCHead.from_config(head_cfg)
        self._ctc_decoding_cfg = _plain(aux.get("decoding"))
        self._ctc = self._ctc_path("ctc_decoder", self._ctc_decoding_cfg)
        self.cur_decoder = "rnnt"

    @property
    def decoder_types(self) -> tuple[str, ...]:
        first = (self._rnnt.name, "ctc")
        return first if self.cur_decoder == "rnnt" else ("ctc", self._rnnt.name)

    def _path(self, decoder_type: str | None):
        choice = self.cur_decoder if decoder_type in (None, "default") else decoder_type
        if choice == "ctc":
            return self._ctc
        if choice in ("rnnt", "tdt"):
            return self._rnnt
        raise UnsupportedOptionError(f"unknown decoder {decoder_type!r}; available: {', '.join(self.decoder_types)}")

    def change_decoding_strategy(self, decoding_cfg: Any = None, decoder_type: str | None = None,
                                 verbose: bool = True) -> None:
        if decoder_type == "ctc":
            self._ctc_decoding_cfg = _merge(self._ctc_decoding_cfg, decoding_cfg)
            self._ctc = self._ctc_path("ctc_decoder", self._ctc_decoding_cfg)
            self._update_cfg("aux_ctc.decoding", self._ctc_decoding_cfg)
            self.cur_decoder = "ctc"
            return
        super().change_decoding_strategy(decoding_cfg, None, verbose)
        self.cur_decoder = "rnnt"


class EncDecHybridRNNTCTCBPEModel(EncDecHybridRNNTCTCModel):
    pass


_CLASSES: dict[str, type[ASRModel]] = {
    c.__name__: c
    for c in (EncDecCTCModel, EncDecCTCModelBPE, EncDecRNNTModel, EncDecRNNTBPEModel,
              EncDecHybridRNNTCTCModel, EncDecHybridRNNTCTCBPEModel)
}


def model_class_for(target: str) -> type[ASRModel]:
    """The runtime class for a checkpoint's ``target`` (e.g. ``nemo.collections.asr.models.EncDecCTCModelBPE``)."""
    name = (target or "").rsplit(".", 1)[-1]
    if name == "EncDecMultiTaskModel":
        from models.aed.model import EncDecMultiTaskModel

        return EncDecMultiTaskModel
    if name not in _CLASSES:
        raise CheckpointError(
            f"unsupported checkpoint class {target!r}; aviary supports: {', '.join(sorted(_CLASSES))}"
        )
    return _CLASSES[name]
