"""Packed (unpadded) execution of a batch of utterances of different lengths.

A padded batch ``[B, T_max, D]`` of a 1 s and a 28 s clip computes 28 s of feed-forward, projections and
pointwise convolutions for each. Packed, the valid frames of all utterances are concatenated into one
``[N, D]`` matrix (``N = Σ Tᵢ``): every position-wise operation (the bulk of a Conformer's work) runs once over
exactly the frames that exist, as one large matrix product. Only the operations that mix frames —
attention and the depthwise convolution — need utterance boundaries; they run per *group* of utterances of
similar length, padded to the group's longest (the groups come from the caller, e.g. length buckets with
bounded padding), and masked as in the padded code path.

Rows are ordered group by group, utterance by utterance within a group, frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class PackedGroup:
    """One group: ``size`` utterances padded to ``t`` frames, stored in packed rows ``rows``."""

    rows: slice
    size: int
    t: int
    lengths: torch.Tensor  # [size] int64
    index: torch.Tensor | None  # positions of the valid frames in the flattened [size·t]; None: no padding
    att_mask: torch.Tensor | None  # [size, 1, t, t] True = blocked (None: nothing blocked)
    pad_mask: torch.Tensor  # [size, t] True = padding

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """This group's packed rows ``[N, C]`` → ``[size, t, C]`` with zeros in the padding."""
        rows = packed[self.rows]
        if self.index is None:
            return rows.reshape(self.size, self.t, rows.shape[-1])
        out = rows.new_zeros(self.size * self.t, rows.shape[-1])
        return out.index_copy_(0, self.index, rows).view(self.size, self.t, rows.shape[-1])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[size, t, C]`` → the valid frames ``[rows, C]`` (padding dropped)."""
        flat = padded.reshape(self.size * self.t, padded.shape[-1])
        return flat if self.index is None else flat.index_select(0, self.index)


class Packing:
    """The layout of a packed batch: its groups, in order, and the longest padded length ``t_max``.

    ``masks(lengths, t)`` gives a group's ``(att_mask, pad_mask)`` as the padded code path builds them.
    """

    def __init__(
        self,
        group_lengths: Sequence[torch.Tensor],
        group_t: Sequence[int],
        masks: Callable[[torch.Tensor, int], tuple[torch.Tensor | None, torch.Tensor]],
    ) -> None:
        self.groups: list[PackedGroup] = []
        start = 0
        for lengths, t in zip(group_lengths, group_t):
            lengths = lengths.to(torch.int64)
            n = int(lengths.sum())
            att_mask, pad_mask = masks(lengths, t)
            index = None
            if n < lengths.numel() * t:
                index = (~pad_mask).flatten().nonzero().squeeze(1)
            self.groups.append(PackedGroup(slice(start, start + n), lengths.numel(), t, lengths, index,
                                           att_mask, pad_mask))
            start += n
        self.t_max = max(group_t)
        self.batch = sum(g.size for g in self.groups)

    def pack(self, padded: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each group's ``[size, t, C]`` → one ``[N, C]``."""
        return torch.cat([g.unpad(x) for g, x in zip(self.groups, padded)])

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` → ``[B, t_max, C]`` (groups stacked in order; zeros past each utterance's length)."""
        out = packed.new_zeros(self.batch, self.t_max, packed.shape[-1])
        b = 0
        for g in self.groups:
            out[b : b + g.size, : g.t] = g.pad(packed)
            b += g.size
        return out
