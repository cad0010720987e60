"""Pseudo labels for one epoch (docs/method.md steps 2-3b), one strategy per `labels.mode` as a plug-in:
`base.py` (what strategies share), one module per strategy (`cpcl.py`, `image_centred.py`, `pair_fused.py`),
`registry.py` (LABEL_STRATEGIES and the phase that runs one), `selection.py` (the clustering chosen on val) and
`oracle.py` (the oracle's labels and the `oracle_` diagnostics). No module here imports the engine's config at
run time: the config imports the strategies' sections from here."""
