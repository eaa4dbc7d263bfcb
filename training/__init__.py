"""seqstream's offline side: train the worker's network on recorded data and export it.

``seqstream train --config NAME|PATH`` runs :func:`training.fit.fit`:

- :mod:`training.sources` reads MIT-BIH / WFDB, NAB, SKAB or a user's CSV/Parquet into per-entity
  series with labels; :mod:`training.data` cuts them in time (train | validation | test per
  entity), fits the scaler on training parts only and serves windows (a LightningDataModule);
- :mod:`training.module` trains :class:`stream.model.Forecaster` (the worker's own network);
- :mod:`training.calibrate` sets the residual scale and the anomaly threshold on validation
  scores (peaks-over-threshold by default), :mod:`training.evaluate` measures the untouched test
  parts, :mod:`training.plot` draws them;
- :mod:`training.config` holds the YAML configs in ``training/configs`` and their flags.

Nothing in :mod:`stream` imports this package: the worker runs without Lightning.
"""

__all__: list[str] = []
