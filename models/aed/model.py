"""``EncDecMultiTaskModel``: Canary attention encoder-decoder models (ASR and speech translation).

    model = EncDecMultiTaskModel.restore_from("canary-1b-flash.nemo", map_location="cpu")
    model.transcribe(["a.wav"], source_lang="de", target_lang="de", pnc=True)         # German ASR
    model.transcribe(["a.wav"], source_lang="en", target_lang="fr")                   # en → fr translation
    model.transcribe("manifest.json")            # per-entry task / source_lang / target_lang / pnc / ...

Pipeline: mel front-end → FastConformer → ``encoder_decoder_proj`` (Linear when the encoder and decoder
widths differ) → Transformer decoder prompted per utterance (see ``models.aed.prompts``) → greedy or beam
search (``models.aed.decoding``) → NeMo's detokenisation (leading space and special tokens kept).

Differences from NeMo 3.0, all deliberate: every utterance has its own prompt and length cap, so a result
never depends on the batch (NeMo mixes prompt states across utterances in batched beam search and caps by
the padded batch length); prompt slots accept booleans and any case; the call's keywords (``task``,
``decodercontext``, ``emotion``, ``itn``, ``diarize``, …) reach file inputs too (NeMo forwards only a few,
and needs ``taskname`` for files but ``task`` for arrays); ``beam.len_pen`` given to
``change_decoding_strategy`` is honoured as ``length_penalty`` (NeMo ignores it; the checkpoint's own
``len_pen`` stays ignored, as in NeMo).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from models.aed import timestamps as aed_ts
from models.aed.decoder import TokenClassifier, TransformerDecoderNM
from models.aed.decoding import PromptedDecoder, build_strategy
from models.aed.prompts import flatten_prompt
from models.aed.prompts import prompt_format as make_prompt_format
from models.aed.tokenizer import AEDTokenizer, CanaryBPETokenizer, CanaryTokenizer, build_aed_tokenizer
from models.asr_model import ASRModel, TranscribeConfig, skip_weight_init
from models.checkpoint import Checkpoint
from models.errors import CheckpointError, UnsupportedOptionError
from models.hypothesis import Hypothesis
from models.inputs import AudioItem, collate, expand, load_item

# Manifest-entry fields that feed the prompt (NeMo's names; ``taskname``/``context`` are legacy aliases).
PROMPT_KEYS = ("source_lang", "target_lang", "task", "taskname", "pnc", "decodercontext", "context",
               "emotion", "itn", "timestamp", "diarize")
NEMO_DECODING = {"strategy": "beam", "greedy": {"max_generation_delta": -1},
                 "beam": {"beam_size": 1, "length_penalty": 0.0, "max_generation_delta": -1}}
MIN_DURATION_S = 1.0  # NeMo's transcribe() zero-pads shorter audio to 1 s, on both sides
ALIGNER_CONFIG = "timestamps_asr_model_config.yaml"


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = OmegaConf.merge(OmegaConf.create(dict(base)), OmegaConf.create(dict(update)))
    return OmegaConf.to_container(merged, resolve=True)


def pad_to_min(audio: np.ndarray, min_samples: int, extra_left: bool) -> np.ndarray:
    """Zero-pad both sides to ``min_samples``. An odd total puts the extra sample on the left for files
    (Lhotse's rule in NeMo's file loader) and on the right for arrays (NeMo's tensor loader)."""
    missing = min_samples - audio.shape[0]
    if missing <= 0:
        return audio
    left = (missing + 1) // 2 if extra_left else missing // 2
    return np.pad(audio, (left, missing - left))


class EncDecMultiTaskModel(ASRModel):
    """Canary (multitask AED) checkpoints, ``prompt_format`` canary or canary2."""

    family = "aed"

    def __init__(self, cfg: dict[str, Any], tokenizer: AEDTokenizer) -> None:
        if not isinstance(tokenizer, (CanaryTokenizer, CanaryBPETokenizer)):
            raise CheckpointError("a Canary model needs a Canary tokenizer (see build_tokenizer)")
        super().__init__(cfg, tokenizer)
        self.has_external_aligner = False  # canary-1b-v2 style: word times from a bundled CTC model

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build_tokenizer(cls, cfg: dict[str, Any], resolve: Any) -> AEDTokenizer:
        return build_aed_tokenizer(cfg, resolve)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, strict: bool = True) -> EncDecMultiTaskModel:
        name = ckpt.target.rsplit(".", 1)[-1]
        if name != "EncDecMultiTaskModel":
            raise CheckpointError(f"{ckpt.source} holds a {ckpt.target}, not an EncDecMultiTaskModel")
        tokenizer = cls.build_tokenizer(ckpt.config, ckpt.resolve_artifact)
        with skip_weight_init():  # every weight is loaded from the checkpoint below
            model = cls(ckpt.config, tokenizer)
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        if strict and (missing or unexpected):
            raise CheckpointError(f"{ckpt.source}: weights do not match the architecture in its config "
                                  f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
        model.has_external_aligner = (ckpt.directory / ALIGNER_CONFIG).is_file()
        return model.eval()

    def _build_heads(self, cfg: dict[str, Any]) -> None:
        defaults = cfg.get("model_defaults") or {}
        enc_dim = int(defaults.get("asr_enc_hidden") or self.encoder.d_model)
        dec_cfg = dict((cfg.get("transf_decoder") or {}).get("config_dict") or {})
        dec_dim = int(defaults.get("lm_dec_hidden") or dec_cfg["hidden_size"])
        if int((cfg.get("transf_encoder") or {}).get("num_layers", 0) or 0) > 0:
            raise CheckpointError("Canary checkpoints with a transf_encoder are not supported")
        # NeMo adds the projection only when the widths differ (canary-180m-flash: 512 → 1024)
        self.encoder_decoder_proj = nn.Linear(enc_dim, dec_dim) if enc_dim != dec_dim else nn.Identity()
        vocab = 8 * math.ceil(self.tokenizer.vocab_size / 8)  # NeMo pads the vocabulary to a multiple of 8
        self.transf_decoder = TransformerDecoderNM(dec_cfg, vocab)
        head = cfg.get("head") or {}
        layers = int(head.get("num_layers", 1))
        self.log_softmax = TokenClassifier(self.transf_decoder.hidden_size, vocab, layers)
        # tied: one matrix embeds tokens and scores them; checkpoints load the head's copy last, as NeMo does
        self.transf_decoder._embedding.token_embedding.weight = self.log_softmax.mlp.layer0.weight
        try:
            self.prompt = make_prompt_format(str(cfg.get("prompt_format")), cfg.get("prompt_defaults"))
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc
        self._runner = PromptedDecoder(self.transf_decoder, self.log_softmax, self.tokenizer.eos_id,
                                       self.tokenizer.pad_id)
        self._decoding_cfg = _merge(NEMO_DECODING, _plain(cfg.get("decoding")))
        self._search = build_strategy(self._decoding_cfg, self._runner)

    # ---- what the model can do -------------------------------------------------------------------
    @property
    def decoder_types(self) -> tuple[str, ...]:
        return ("aed",)

    @property
    def prompt_format(self) -> str:
        return self.prompt.name

    @property
    def supported_languages(self) -> list[str]:
        """Language codes usable as ``source_lang`` / ``target_lang``."""
        langs = self.tokenizer.languages
        prompted = [lang for lang in langs if f"<|{lang}|>" in self.tokenizer.special_tokens]
        return prompted or langs

    @property
    def supported_tasks(self) -> list[str]:
        """``asr``, plus ``ast`` (speech translation) when the model can translate."""
        if self.prompt.name == "canary":
            can_translate = "<|translate|>" in self.tokenizer.special_tokens
        else:
            can_translate = len(self.supported_languages) > 1
        return ["asr", "ast"] if can_translate else ["asr"]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "languages": self.supported_languages, "tasks": self.supported_tasks,
                "prompt_format": self.prompt.name, "decoding": self._decoding_cfg.get("strategy")}

    def prompt_ids(self, *layers: Mapping[str, Any] | None) -> list[int]:
        """Prompt token ids for slot layers (later layers win over earlier ones and the defaults).

        Raises:
            ValueError: an unknown language, task or slot value.
        """
        return self.prompt.ids(self.tokenizer, *layers)

    # ---- decoding configuration -------------------------------------------------------------------
    def change_decoding_strategy(self, decoding_cfg: Any = None, decoder_type: str | None = None,
                                 verbose: bool = True) -> None:
        """Merge ``decoding_cfg`` (``strategy`` greedy|beam, ``greedy.*``, ``beam.beam_size``,
        ``beam.length_penalty`` — or its alias ``beam.len_pen`` —, ``*.max_generation_delta``)."""
        self._check_decoder_type(decoder_type)
        update = _plain(decoding_cfg)
        beam = dict(update.get("beam") or {})
        if "len_pen" in beam and "length_penalty" not in beam:
            update["beam"] = {**beam, "length_penalty": beam["len_pen"]}  # NeMo ignores len_pen; we honour it
        merged = _merge(self._decoding_cfg, update)
        self._search = build_strategy(merged, self._runner)  # validates before anything changes
        self._decoding_cfg = merged
        self._update_cfg("decoding", merged)

    @staticmethod
    def _check_decoder_type(decoder_type: str | None) -> None:
        if decoder_type not in (None, "default", "aed"):
            raise UnsupportedOptionError(f"a Canary model has no {decoder_type!r} decoder; it has 'aed'")

    # ---- inference ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_states(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms ``[B, N]`` → decoder-side encoder states ``[B, T, D_dec]`` and lengths ``[B]``."""
        enc, enc_len = self.encode(audio, lengths)  # [B, D_enc, T]
        return self.encoder_decoder_proj(enc.transpose(1, 2)), enc_len

    @torch.inference_mode()
    def forward(self, input_signal: torch.Tensor, input_signal_length: torch.Tensor,
                transcript: torch.Tensor | None = None) -> tuple[torch.Tensor | None, ...]:
        """NeMo's ``forward``: (teacher-forced log-probs ``[B, L, V]`` or None, encoder lengths ``[B]``,
        encoder states ``[B, T, D]``, encoder mask ``[B, T]``)."""
        states, enc_len = self.encode_states(input_signal, input_signal_length)
        valid = torch.arange(states.shape[1], device=states.device)[None] < enc_len[:, None]
        log_probs = None
        if transcript is not None:
            hidden = self.transf_decoder(transcript, states, valid)  # [B, L, D]
            log_probs = torch.log_softmax(self.log_softmax(hidden), -1)
        return log_probs, enc_len, states, valid.to(states.dtype)

    def _call_slots(self, prompt: Mapping[str, Any], timestamps: bool | None) -> dict[str, Any]:
        slots = flatten_prompt(prompt)
        if timestamps is not None:
            if timestamps and self.has_external_aligner:
                raise UnsupportedOptionError("this model times words with NeMo's external CTC aligner, "
                                             "which aviary does not implement")
            slots["timestamp"] = bool(timestamps)
        return slots

    def _item_prompt(self, call_slots: Mapping[str, Any], item: AudioItem) -> list[int]:
        entry = {k: item.entry[k] for k in PROMPT_KEYS if item.entry.get(k) is not None}
        try:
            return self.prompt_ids(call_slots, entry)
        except ValueError as exc:
            raise ValueError(f"{item.name}: {exc}") from exc

    def _pad(self, item: AudioItem, extra_left: bool) -> AudioItem:
        audio = pad_to_min(item.audio, int(MIN_DURATION_S * self.sample_rate), extra_left)
        return item if audio is item.audio else AudioItem(audio, item.name, item.entry)

    def transcribe(self, audio: Any, batch_size: int = 4, return_hypotheses: bool = False,
                   num_workers: int = 0, channel_selector: Any = None, augmentor: Any = None,
                   verbose: bool = True, timestamps: bool | None = None,
                   override_config: TranscribeConfig | None = None, decoder_type: str | None = None,
                   **prompt: Any) -> list[Any]:
        """Transcribe or translate paths, manifests, manifest entries, arrays or tensors, in input order.

        Prompt keywords (``source_lang``, ``target_lang``, ``task`` asr|ast, ``pnc``, canary2: ``itn``,
        ``timestamp``, ``diarize``, ``emotion``, ``decodercontext``; or NeMo's ``role=/slots=`` and
        ``turns=[...]`` forms) apply to every input; a manifest entry's own fields win over them.
        ``timestamps=True`` (canary2) asks for frame tokens and returns word/segment timestamps.
        """
        config = self._resolve_config(override_config, batch_size=batch_size,
                                      return_hypotheses=return_hypotheses, channel_selector=channel_selector,
                                      timestamps=timestamps, verbose=verbose, decoder_type=decoder_type)
        self._check_decoder_type(config.decoder_type)
        call_slots = self._call_slots(prompt, config.timestamps)
        items = []
        for i, source in enumerate(expand(audio)):
            item = load_item(source, self.sample_rate, i, config.channel_selector)
            items.append(self._pad(item, extra_left=not isinstance(source, (np.ndarray, torch.Tensor))))
        prompts = [self._item_prompt(call_slots, item) for item in items]  # fail before any decoding
        order = sorted(range(len(items)), key=lambda i: items[i].num_samples)  # less padding per batch
        results: list[Any] = [None] * len(items)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            hyps = self._decode([items[i] for i in idx], [prompts[i] for i in idx], bool(config.timestamps))
            for i, hyp in zip(idx, hyps):
                results[i] = hyp if config.return_hypotheses else hyp.text
        return results

    @torch.inference_mode()
    def transcribe_items(self, items: list[AudioItem], return_hypotheses: bool = True,
                         timestamps: bool = False, decoder_type: str | None = None,
                         **prompt: Any) -> list[Hypothesis]:
        """Decode one batch of loaded utterances (the service's entry point).

        Each item's prompt comes from ``prompt`` (keywords as in :meth:`transcribe`) overridden by the
        item's ``entry`` (``task``, ``source_lang``, ``target_lang``, ``pnc``, …). Audio under 1 s is padded
        as NeMo pads files.
        """
        self._check_decoder_type(decoder_type)
        call_slots = self._call_slots(prompt, timestamps or None)
        items = [self._pad(item, extra_left=True) for item in items]
        return self._decode(items, [self._item_prompt(call_slots, item) for item in items], bool(timestamps))

    def _decode(self, items: list[AudioItem], prompts: Sequence[Sequence[int]],
                timestamps: bool) -> list[Hypothesis]:
        audio, lengths = collate(items, self.device)
        states, enc_len = self.encode_states(audio, lengths)
        results = self._search(states, enc_len, prompts)
        return [self._hypothesis(r.tokens, r.score, int(n), timestamps) for r, n in zip(results, enc_len)]

    def _hypothesis(self, tokens: list[int], score: float, length: int, timestamps: bool) -> Hypothesis:
        text = self.tokenizer.ids_to_text(tokens)
        hyp = Hypothesis(score=score, y_sequence=torch.tensor(tokens, dtype=torch.long), text=text,
                         tokens=list(tokens), length=length)
        if timestamps:
            stride = float(self._cfg_dict["preprocessor"].get("window_stride") or self.preprocessor.window_stride)
            hyp.text, hyp.timestamp = aed_ts.parse(text, stride, int(self.encoder.subsampling_factor))
        return hyp
