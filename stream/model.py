"""The forecasting network shared by training and the stream worker (plain torch, no Lightning).

A stack of recurrent layers reads one sample ``x_t`` (F features, already scaled) per step and a
linear head maps the top layer's hidden state to the next H samples::

    h_t      = cell(x_t, h_{t-1})                   # tanh RNN, LSTM or GRU, L layers
    x̂_{t+k}  = x_t + W_k h_t + b_k,   k = 1..H      # "skip": the head predicts the change

The skip connection makes persistence (``x̂_{t+k} = x_t``) the network's starting point, so an
untrained head is already a fair forecaster and training only learns the correction; at 360 Hz
an ECG changes little per sample, and predicting the change is far better conditioned.

The textbook tanh cell is ``h_t = tanh(W_x x_t + W_h h_{t-1} + b)``. Bidirectional layers
are refused: they need samples that have not arrived yet, which a stream never has.

``forward`` runs whole (possibly ragged) sequences; ``step`` advances a batch of entities by one
sample. Both go through the same ``nn.RNN``/``nn.LSTM``/``nn.GRU`` call, so they agree to float
rounding. The state of an LSTM is ``(h, c)``; of the others ``h``; each ``[layers, batch, hidden]``.
``pack_state``/``unpack_state`` flatten it to one float32 row per entity for the state store.

>>> import torch
>>> net = Forecaster("gru", n_features=1, hidden_size=4, num_layers=2, horizon=3).eval()
>>> seq = torch.zeros(2, 5, 1)
>>> y, state = net(seq)
>>> tuple(y.shape), tuple(state.shape), net.state_size
((2, 5, 3, 1), (2, 2, 4), 8)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stream.errors import ConfigError

__all__ = ["CELLS", "Forecaster", "State"]

CELLS = ("rnn", "lstm", "gru")
State = Tensor | tuple[Tensor, Tensor]


class Forecaster(nn.Module):
    """L stacked recurrent layers and a linear head forecasting H steps of F features."""

    def __init__(self, cell: str, n_features: int, hidden_size: int, num_layers: int = 1,
                 horizon: int = 1, dropout: float = 0.0, gaussian: bool = False,
                 bidirectional: bool = False) -> None:
        super().__init__()
        if bidirectional:
            raise ConfigError("bidirectional: expected False for streaming, got True "
                              "(a backward layer needs future samples, which a stream never has)")
        if cell not in CELLS:
            raise ConfigError(f"cell: expected one of {', '.join(CELLS)}, got {cell!r}")
        for name, value in (("n_features", n_features), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("horizon", horizon)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.cell, self.n_features, self.hidden_size = cell, n_features, hidden_size
        self.num_layers, self.horizon, self.gaussian = num_layers, horizon, gaussian
        self.dropout = dropout
        kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = kind(n_features, hidden_size, num_layers=num_layers, batch_first=True,
                        dropout=dropout if num_layers > 1 else 0.0, **extra)
        outputs = horizon * n_features * (2 if gaussian else 1)
        self.head = nn.Linear(hidden_size, outputs)

    @property
    def state_size(self) -> int:
        """float32 values per entity in a packed state."""
        return self.num_layers * self.hidden_size * (2 if self.cell == "lstm" else 1)

    def config(self) -> dict:
        """The constructor's arguments, as written to an artifact's card."""
        return {"cell": self.cell, "n_features": self.n_features,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "horizon": self.horizon, "dropout": self.dropout, "gaussian": self.gaussian}

    def initial_state(self, batch: int) -> State:
        h = torch.zeros(self.num_layers, batch, self.hidden_size)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, seq: Tensor, state: State | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """Forecasts ``[B, T, H, F]`` for every step of ``seq`` ``[B, T, F]`` and the final state.

        With ``lengths``, row ``b`` holds ``lengths[b]`` real samples followed by padding; the
        returned state is each row's state after its last real sample (the padding never touches
        it), and forecasts at padded steps are zero.
        """
        mean, _, state = self.forward_dist(seq, state, lengths)
        return mean, state

    def forward_dist(self, seq: Tensor, state: State | None = None,
                     lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None, State]:
        """Like :meth:`forward`, plus the predicted log-variance when ``gaussian`` (else None)."""
        if seq.dim() != 3 or seq.shape[-1] != self.n_features:
            raise ValueError(f"seq: expected [batch, time, {self.n_features}], "
                             f"got {list(seq.shape)}")
        if state is None:
            state = self.initial_state(seq.shape[0])
        if lengths is None:
            top, state = self.rnn(seq, state)
        else:
            packed = pack_padded_sequence(seq, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            top_packed, state = self.rnn(packed, state)
            top, _ = pad_packed_sequence(top_packed, batch_first=True, total_length=seq.shape[1])
        mean, logvar = self._head(top, seq)
        if lengths is not None:
            valid = (torch.arange(seq.shape[1]) < lengths.cpu()[:, None]).to(mean.dtype)
            mean = mean * valid[:, :, None, None]
        return mean, logvar, state

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Advance a batch of entities by one sample ``x`` ``[B, F]``: forecasts ``[B, H, F]``."""
        mean, state = self.forward(x[:, None, :], state)
        return mean[:, 0], state

    def _head(self, top: Tensor, seq: Tensor) -> tuple[Tensor, Tensor | None]:
        b, t, _ = top.shape
        out = self.head(top).view(b, t, self.horizon, -1)
        delta, logvar = (out.chunk(2, dim=-1) if self.gaussian else (out, None))
        return seq[:, :, None, :] + delta, logvar

    def pack_state(self, state: State) -> Tensor:
        """``[B, state_size]`` float32 rows, layer-major, ``h`` then ``c`` for an LSTM."""
        parts = state if isinstance(state, tuple) else (state,)
        return torch.cat([p.permute(1, 0, 2).reshape(p.shape[1], -1) for p in parts], dim=1)

    def unpack_state(self, rows: Tensor) -> State:
        """Inverse of :meth:`pack_state`."""
        if rows.dim() != 2 or rows.shape[1] != self.state_size:
            raise ValueError(f"state rows: expected [batch, {self.state_size}], "
                             f"got {list(rows.shape)}")
        b = rows.shape[0]
        parts = rows.view(b, -1, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        parts = [p.contiguous() for p in parts]
        return (parts[0], parts[1]) if self.cell == "lstm" else parts[0]
