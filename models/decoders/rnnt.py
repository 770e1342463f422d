"""Transducer prediction networks and joint (NeMo ``RNNTDecoder``, ``StatelessTransducerDecoder``, ``RNNTJoint``).

Predictors share one small interface used by the greedy decoders (``models/decoding/rnnt.py``):
``initial_state(B)``, ``step(tokens [B], state) -> (g [B, H], state)``, ``select_state(mask, new, old)``,
``split_state(state)``, ``blank_idx`` (the SOS / blank input id, = V) and ``output_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from models.decoders.ctc import flatten_cfg
from models.errors import CheckpointError

LSTMState = tuple[Tensor, Tensor]  # (h [L, B, H_out], c [L, B, H_cell])


INPUT_GATES_MAX_BYTES = 64 << 20  # the largest per-token input-gate table RNNTPredictor precomputes


class RNNTPredictor(nn.Module):
    """LSTM prediction network; keys ``prediction.embed.weight``, ``prediction.dec_rnn.lstm.*``.

    With ``blank_as_pad`` the embedding has a row for blank (index V); its *stored* value is the SOS input,
    as in NeMo's batched greedy decoders. Without it, blank inputs map to a zero vector.
    """

    def __init__(
        self,
        vocab_size: int,
        pred_hidden: int,
        pred_rnn_layers: int = 1,
        rnn_hidden_size: int = -1,
        blank_as_pad: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.blank_idx = vocab_size
        self.blank_as_pad = blank_as_pad
        self.num_layers = pred_rnn_layers
        self.cell_size = rnn_hidden_size if rnn_hidden_size > 0 else pred_hidden
        proj = (
            pred_hidden if pred_hidden < rnn_hidden_size else 0
        )  # NeMo projects big LSTMs back to pred_hidden
        self.output_dim = proj if proj else self.cell_size
        rows = vocab_size + 1 if blank_as_pad else vocab_size
        embed = nn.Embedding(rows, pred_hidden, padding_idx=vocab_size if blank_as_pad else None)
        lstm = nn.LSTM(pred_hidden, self.cell_size, num_layers=pred_rnn_layers, proj_size=proj)
        self.prediction = nn.ModuleDict({"embed": embed, "dec_rnn": nn.ModuleDict({"lstm": lstm})})

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RNNTPredictor:
        c = flatten_cfg(cfg)
        if c.get("normalization_mode") not in (None, "null"):
            raise CheckpointError("RNNTDecoder normalization_mode batch/layer is not supported")
        net = c["prednet"]
        return cls(
            int(c["vocab_size"]),
            int(net["pred_hidden"]),
            int(net.get("pred_rnn_layers", 1)),
            int(net.get("rnn_hidden_size", -1)),
            bool(c.get("blank_as_pad", True)),
        )

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> LSTMState:
        w = self.prediction["embed"].weight
        device = w.device if device is None else device
        h = torch.zeros(self.num_layers, batch_size, self.output_dim, device=device, dtype=w.dtype)
        c = torch.zeros(self.num_layers, batch_size, self.cell_size, device=device, dtype=w.dtype)
        return h, c

    def embed(self, tokens: Tensor) -> Tensor:
        emb = self.prediction["embed"]
        if self.blank_as_pad:
            return emb(tokens)  # [B, H]
        is_blank = tokens == self.blank_idx
        return emb(tokens.masked_fill(is_blank, 0)) * (~is_blank).unsqueeze(-1).to(emb.weight.dtype)

    def step(self, tokens: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """One prediction step: ``g [B, H_out]`` and the new state.

        Without autograd (decoding) each layer is computed as one ``addmm`` of ``[x, h]`` with the stacked
        ``[W_ih | W_hh]`` and the summed biases, then the gates: a single time step through ``nn.LSTM``'s
        oneDNN primitive costs ~4x more on CPU (``bench/lstm_step.py``); outputs agree to ~1e-6. With autograd
        on, ``nn.LSTM`` itself runs.
        """
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        lstm = self.prediction["dec_rnn"]["lstm"]
        if torch.is_grad_enabled() or not lstm.bias:
            g, (h, c) = lstm(self.embed(tokens).unsqueeze(0), state)  # [1, B, H], time-major like NeMo
            return g.squeeze(0), (h, c)  # [B, H_out]
        h0, c0 = state
        hs, cs = [], []
        cells, input_gates = self._stacked_cells()
        x = None if input_gates is not None else self.embed(tokens)  # [B, H]
        for layer, (weight, bias, proj) in enumerate(cells):
            if layer == 0 and input_gates is not None:  # W_ih·embed(k) + biases, looked up per token
                gates = torch.addmm(input_gates[tokens], h0[0], weight)  # weight: W_hh^T only
            else:
                gates = torch.addmm(bias, torch.cat([x, h0[layer]], 1), weight)  # [B, 4 H_cell], i f g o
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c0[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            if proj is not None:
                x = x @ proj
            hs.append(x)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))

    def _stacked_cells(self) -> tuple[list[tuple[Tensor, Tensor, Tensor | None]], Tensor | None]:
        """Per layer ``([W_ih | W_hh]^T, b_ih + b_hh, W_hr^T or None)``, and the first layer's input gates per
        token, ``W_ih·embed(k) + b_ih + b_hh`` for every ``k`` (then its weight is ``W_hh^T`` alone), or None
        where that table would exceed ``INPUT_GATES_MAX_BYTES``. Rebuilt whenever a weight changes
        (loading, ``to(device)``, in-place edits).

        At batch 1 a step is a matrix-vector product whose cost is reading the weights; the table halves
        what the first layer reads (``bench/lstm_step.py``).
        """
        lstm = self.prediction["dec_rnn"]["lstm"]
        params = [*lstm.parameters(), self.prediction["embed"].weight]
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = getattr(self, "_stacked", None)
        if cached is None or cached[0] != key:
            cells = []
            table = None
            with torch.no_grad():
                for layer in range(self.num_layers):
                    w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
                    bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
                    proj = getattr(lstm, f"weight_hr_l{layer}", None)
                    proj = None if proj is None else proj.t().contiguous()
                    table_bytes = (self.blank_idx + 1) * w_ih.shape[0] * w_ih.element_size()
                    if layer == 0 and table_bytes <= INPUT_GATES_MAX_BYTES:
                        tokens = torch.arange(self.blank_idx + 1, device=w_ih.device)
                        table = torch.addmm(bias, self.embed(tokens), w_ih.t())  # [V+1, 4 H_cell]
                        cells.append((w_hh.t().contiguous(), bias, proj))
                    else:
                        cells.append((torch.cat([w_ih, w_hh], 1).t().contiguous(), bias, proj))
            self._stacked = cached = (key, cells, table)
        return cached[1], cached[2]

    @staticmethod
    def select_state(mask: Tensor, new: LSTMState, old: LSTMState) -> LSTMState:
        """Rows where ``mask`` [B] is True come from ``new``, others from ``old``."""
        m = mask.view(1, -1, 1)
        return torch.where(m, new[0], old[0]), torch.where(m, new[1], old[1])

    @staticmethod
    def split_state(state: LSTMState) -> list[LSTMState]:
        """Per-utterance ``(h [L, H], c [L, H])``, NeMo's ``Hypothesis.dec_state`` predictor part."""
        h, c = state
        return [(h[:, b].clone(), c[:, b].clone()) for b in range(h.shape[1])]


class StatelessPredictor(nn.Module):
    """Stateless prediction network: concatenated embeddings of the last ``context_size`` labels.

    Keys ``prediction.embeds.{i}.weight`` (i = 0 is the most recent label, with the larger share of dims).
    The state is the label history ``[B, context_size - 1]`` (blank-filled at start).
    """

    def __init__(
        self, vocab_size: int, pred_hidden: int, context_size: int = 1, normalization_mode: str | None = None
    ) -> None:
        super().__init__()
        if context_size < 1:
            raise CheckpointError("context_size must be >= 1")
        self.vocab_size = vocab_size
        self.blank_idx = vocab_size
        self.context_size = context_size
        self.output_dim = pred_hidden
        small = pred_hidden // 2 // context_size
        sizes = [pred_hidden - small * (context_size - 1)] + [small] * (context_size - 1)
        embeds = nn.ModuleList(nn.Embedding(vocab_size + 1, n, padding_idx=vocab_size) for n in sizes)
        self.prediction = nn.ModuleDict({"embeds": embeds})
        self.norm: nn.Module = (
            nn.LayerNorm(pred_hidden, elementwise_affine=False)
            if normalization_mode == "layer"
            else nn.Identity()
        )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> StatelessPredictor:
        c = flatten_cfg(cfg)
        return cls(
            int(c["vocab_size"]),
            int(c["prednet"]["pred_hidden"]),
            int(c.get("context_size", 1)),
            c.get("normalization_mode"),
        )

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> Tensor:
        device = self.prediction["embeds"][0].weight.device if device is None else device
        return torch.full(
            (batch_size, self.context_size - 1), self.blank_idx, dtype=torch.long, device=device
        )

    def step(self, tokens: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        history = torch.cat([state, tokens.unsqueeze(1)], dim=1)  # [B, C], most recent last
        outs = [emb(history[:, self.context_size - 1 - i]) for i, emb in enumerate(self.prediction["embeds"])]
        g = self.norm(torch.cat(outs, dim=-1))  # [B, H]
        return g, history[:, 1:]

    @staticmethod
    def select_state(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
        return torch.where(mask.unsqueeze(1), new, old)

    @staticmethod
    def split_state(state: Tensor) -> list[Tensor]:
        return [s.clone() for s in state]


def build_predictor(cfg: Mapping[str, Any]) -> RNNTPredictor | StatelessPredictor:
    """Pick the predictor class from ``_target_`` (or legacy ``cls``)."""
    target = str(cfg.get("_target_") or cfg.get("cls") or "")
    if target.endswith("StatelessTransducerDecoder"):
        return StatelessPredictor.from_config(cfg)
    return RNNTPredictor.from_config(cfg)


_JOINT_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class RNNTJoint(nn.Module):
    """Joint network; keys ``enc.*``, ``pred.*`` and ``joint_net.{1|2}.*``.

    The final Linear sits at ``joint_net.2`` when the model was trained with joint dropout (a Dropout
    occupies index 1) and at ``joint_net.1`` otherwise; ``load_state_dict`` adapts to whichever is present.
    Output layout: ``[tokens 0..V-1 | blank V | extra outputs (TDT durations)]`` for RNNT/TDT, and
    ``[tokens | big blanks | blank]`` for multi-blank models. All methods return raw logits; the caller
    applies log-softmax (NeMo does so only off-CUDA when ``log_softmax`` is None, see ``use_log_softmax``).
    """

    def __init__(
        self,
        encoder_hidden: int,
        pred_hidden: int,
        joint_hidden: int,
        num_classes: int,
        activation: str = "relu",
        num_extra_outputs: int = 0,
        dropout: float = 0.0,
        log_softmax: bool | None = None,
    ) -> None:
        super().__init__()
        if activation not in _JOINT_ACTIVATIONS:
            raise CheckpointError(f"unsupported joint activation {activation!r}")
        self.vocab_size = num_classes
        self.num_extra_outputs = num_extra_outputs
        self.num_classes_with_blank = num_classes + 1 + num_extra_outputs
        self.log_softmax = log_softmax
        # NeMo sets this from the decoding config; it only acts together with the log-softmax (greedy decoders)
        self.temperature = 1.0
        self.enc = nn.Linear(encoder_hidden, joint_hidden)
        self.pred = nn.Linear(pred_hidden, joint_hidden)
        self._activation = activation
        self.joint_net = self._joint_net(nn.Linear(joint_hidden, self.num_classes_with_blank), dropout > 0)

    def _joint_net(self, final: nn.Linear, with_dropout_slot: bool) -> nn.Sequential:
        act = _JOINT_ACTIVATIONS[self._activation]()
        return nn.Sequential(act, nn.Identity(), final) if with_dropout_slot else nn.Sequential(act, final)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RNNTJoint:
        c = flatten_cfg(cfg)
        net = c["jointnet"]
        num_classes = c.get("num_classes")
        if num_classes is None or int(num_classes) <= 0:
            num_classes = len(c["vocabulary"])
        return cls(
            int(net["encoder_hidden"]),
            int(net["pred_hidden"]),
            int(net["joint_hidden"]),
            int(num_classes),
            str(net.get("activation", "relu")).lower(),
            int(c.get("num_extra_outputs", 0) or 0),
            float(net.get("dropout", 0.0) or 0.0),
            c.get("log_softmax"),
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        keys = set(state_dict)
        final = self.joint_net[-1]
        if "joint_net.2.weight" in keys and len(self.joint_net) == 2:
            self.joint_net = self._joint_net(final, True)
        elif "joint_net.1.weight" in keys and len(self.joint_net) == 3:
            self.joint_net = self._joint_net(final, False)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def use_log_softmax(self, device: torch.device) -> bool:
        """NeMo's rule: config ``log_softmax`` null means "only when not on CUDA"."""
        return device.type != "cuda" if self.log_softmax is None else bool(self.log_softmax)

    def project_encoder(self, enc: Tensor) -> Tensor:
        return self.enc(enc)  # [B, T, D] -> [B, T, J]

    def project_prediction(self, g: Tensor) -> Tensor:
        return self.pred(g)  # [..., H] -> [..., J]

    def joint_after_projection(self, f: Tensor, g: Tensor) -> Tensor:
        """``f`` and ``g`` are projected and must broadcast; returns logits ``[..., V + 1 + E]``."""
        return self.joint_net(f + g)

    def joint(self, enc: Tensor, g: Tensor) -> Tensor:
        """Full lattice: ``enc [B, T, D]``, ``g [B, U, H]`` -> logits ``[B, T, U, V + 1 + E]``."""
        f = self.project_encoder(enc).unsqueeze(2)  # [B, T, 1, J]
        p = self.project_prediction(g).unsqueeze(1)  # [B, 1, U, J]
        return self.joint_after_projection(f, p)
