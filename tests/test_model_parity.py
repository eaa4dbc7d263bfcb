"""Stepping a Forecaster one sample at a time equals running it over the whole sequence.

The worker calls ``step`` once per event; training and offline evaluation call ``forward`` over
windows and whole records. If the two drifted apart, streamed scores would not be the scores the
threshold was calibrated on.
"""

from __future__ import annotations

import pytest
import torch

from stream.errors import ConfigError
from stream.model import CELLS, Forecaster

STEPS = 2000
BATCH = 3
TOL = 1e-5


def _net(cell: str, layers: int, **kw) -> Forecaster:
    torch.manual_seed(7)
    return Forecaster(cell, n_features=2, hidden_size=8, num_layers=layers, horizon=3,
                      **kw).eval()


def _max_state_diff(a, b) -> float:
    pairs = zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]
    return max(float((x - y).abs().max()) for x, y in pairs)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_step_by_step_equals_forward_over_2000_steps(cell: str, layers: int) -> None:
    net = _net(cell, layers, dropout=0.2 if layers > 1 else 0.0)  # eval(): dropout is off
    gen = torch.Generator().manual_seed(1)
    seq = torch.randn(BATCH, STEPS, 2, generator=gen).cumsum(dim=1) * 0.1
    with torch.no_grad():
        whole, final = net(seq)
        state = None
        stepped = []
        for t in range(STEPS):
            y, state = net.step(seq[:, t], state)
            stepped.append(y)
    stepped_t = torch.stack(stepped, dim=1)
    assert stepped_t.shape == whole.shape == (BATCH, STEPS, 3, 2)
    assert float((stepped_t - whole).abs().max()) <= TOL
    assert _max_state_diff(state, final) <= TOL


def test_lstm_state_carries_the_cell_state() -> None:
    net = _net("lstm", 2)
    seq = torch.randn(BATCH, 50, 2)
    with torch.no_grad():
        _, (h, c) = net(seq)
        packed = net.pack_state((h, c))
    assert packed.shape == (BATCH, net.state_size) == (BATCH, 2 * 2 * 8)
    # The cell state is not a copy of h: dropping it changes what comes next.
    with torch.no_grad():
        with_c, _ = net(seq[:, :5], (h, c))
        without_c, _ = net(seq[:, :5], (h, torch.zeros_like(c)))
    assert float((with_c - without_c).abs().max()) > 1e-4
    h2, c2 = net.unpack_state(packed)
    assert torch.equal(h2, h) and torch.equal(c2, c)


@pytest.mark.parametrize("cell", CELLS)
def test_pack_unpack_round_trip_per_entity(cell: str) -> None:
    net = _net(cell, 3)
    with torch.no_grad():
        _, state = net(torch.randn(4, 20, 2))
    rows = net.pack_state(state)
    assert rows.dtype == torch.float32 and rows.shape == (4, net.state_size)
    # Row b restores entity b alone: the store saves and loads rows independently.
    one = net.unpack_state(rows[2:3])
    full = net.unpack_state(rows)
    parts = zip(one, full, strict=True) if cell == "lstm" else [(one, full)]
    for a, b in parts:
        assert torch.equal(a[:, 0], b[:, 2])


@pytest.mark.parametrize("cell", CELLS)
def test_ragged_lengths_give_each_row_its_own_final_state(cell: str) -> None:
    net = _net(cell, 2)
    seq = torch.randn(3, 40, 2)
    lengths = torch.tensor([40, 17, 1])
    with torch.no_grad():
        y, state = net(seq, lengths=lengths)
        for b, n in enumerate(lengths.tolist()):
            alone_y, alone_state = net(seq[b:b + 1, :n])
            assert float((y[b, :n] - alone_y[0]).abs().max()) <= TOL
            assert not y[b, n:].any()
            got = tuple(s[:, b:b + 1] for s in state) if cell == "lstm" else state[:, b:b + 1]
            assert _max_state_diff(got, alone_state) <= TOL


def test_gaussian_head_returns_a_log_variance_per_forecast() -> None:
    net = _net("gru", 1, gaussian=True)
    mean, logvar, _ = net.forward_dist(torch.randn(2, 9, 2))
    assert mean.shape == logvar.shape == (2, 9, 3, 2)


def test_bidirectional_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="future samples"):
        Forecaster("gru", n_features=1, hidden_size=4, bidirectional=True)


@pytest.mark.parametrize("bad", [{"cell": "transformer"}, {"hidden_size": 0},
                                 {"dropout": 1.0}])
def test_bad_architecture_names_what_was_expected(bad: dict) -> None:
    kw = {"cell": "gru", "n_features": 1, "hidden_size": 4, **bad}
    with pytest.raises(ConfigError, match="expected"):
        Forecaster(**kw)
