"""The beat-level recurrent classifier (plain torch; trained by :mod:`training.beatmodule`).

One step per *decided* heartbeat of an entity. Its input is the beat's feature vector ``f_i``
(:mod:`stream.beats`, already normalised), and::

    z_i            = relu(W_in f_i + b_in)                    # per-beat embedding (dropout
                                                              # on it in training only)
    h_i            = GRU(z_i, h_{i-1})                        # (or LSTM) rhythm context
    logits_i       = W_c [h_i, z_i] + b_c                     # AAMI class N, S, V, F
    p_abnormal_i   = sigmoid(w_a · [h_i, z_i] + b_a)          # beat is S, V or F

The heads read the embedding beside the recurrent state so a beat's own morphology reaches them
without passing through the recurrence, and the state carries what the patient's rhythm was.
``forward`` runs whole sequences; ``step`` advances a batch of entities by one beat through the
same ``nn.GRU`` call, so the two agree to float rounding (tested to 1e-5).

>>> import torch
>>> torch.manual_seed(0) and None
>>> net = BeatNet(n_features=3, hidden_size=4).eval()
>>> logits, p, state = net(torch.zeros(2, 5, 3))
>>> tuple(logits.shape), tuple(p.shape), tuple(state.shape), net.state_size
((2, 5, 4), (2, 5), (1, 2, 4), 4)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stream.errors import ConfigError

__all__ = ["CLASSES", "BeatNet"]

CLASSES = ("N", "S", "V", "F")
State = Tensor | tuple[Tensor, Tensor]


class BeatNet(nn.Module):
    """Embedding, one recurrent layer, and the class and abnormality heads."""

    def __init__(self, n_features: int, hidden_size: int = 32, cell: str = "gru",
                 embed_size: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"beats cell: expected gru or lstm, got {cell!r}")
        for name, value in (("n_features", n_features), ("hidden_size", hidden_size),
                            ("embed_size", embed_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"beats {name}: expected an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"beats dropout: expected a number in [0, 1), got {dropout!r}")
        self.n_features, self.hidden_size = n_features, hidden_size
        self.cell, self.embed_size, self.dropout = cell, embed_size, dropout
        self.embed = nn.Linear(n_features, embed_size)
        self.drop = nn.Dropout(dropout)  # training only: eval mode (the worker's) is the identity
        kind = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = kind(embed_size, hidden_size, batch_first=True)
        self.cls_head = nn.Linear(hidden_size + embed_size, len(CLASSES))
        self.abn_head = nn.Linear(hidden_size + embed_size, 1)

    def config(self) -> dict:
        """The constructor's arguments, as the card's ``beats.architecture``."""
        return {"n_features": self.n_features, "hidden_size": self.hidden_size,
                "cell": self.cell, "embed_size": self.embed_size, "dropout": self.dropout}

    @property
    def state_size(self) -> int:
        """float32 values per entity in a packed state."""
        return self.hidden_size * (2 if self.cell == "lstm" else 1)

    def initial_state(self, batch: int) -> State:
        h = torch.zeros(1, batch, self.hidden_size)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, seq: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, State]:
        """Class logits ``[B, T, 4]``, abnormality logits ``[B, T]`` and the final state for
        beat sequences ``[B, T, F]``."""
        if seq.dim() != 3 or seq.shape[-1] != self.n_features:
            raise ValueError(f"beat features: expected [batch, beats, {self.n_features}], got "
                             f"{list(seq.shape)}")
        if state is None:
            state = self.initial_state(seq.shape[0])
        z = self.drop(torch.relu(self.embed(seq)))
        top, state = self.rnn(z, state)
        both = torch.cat([top, z], dim=-1)
        return self.cls_head(both), self.abn_head(both)[..., 0], state

    def pack_state(self, state: State) -> Tensor:
        """``[B, state_size]`` float32 rows (``h`` then ``c`` for an LSTM)."""
        parts = state if isinstance(state, tuple) else (state,)
        return torch.cat([p[0] for p in parts], dim=1)

    def unpack_state(self, rows: Tensor) -> State:
        """Inverse of :meth:`pack_state`."""
        if rows.dim() != 2 or rows.shape[1] != self.state_size:
            raise ValueError(f"beat state rows: expected [batch, {self.state_size}], got "
                             f"{list(rows.shape)}")
        if self.cell == "lstm":
            h, c = rows.split(self.hidden_size, dim=1)
            return h[None].contiguous(), c[None].contiguous()
        return rows[None].contiguous()
