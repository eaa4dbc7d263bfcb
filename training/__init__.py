"""seqstream's offline side: data modules, the Lightning module and the fit/export pipeline."""

__all__: list[str] = []
