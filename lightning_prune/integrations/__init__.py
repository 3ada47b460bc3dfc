"""Selections that flow into the data engines large users already run.

* :mod:`~lightning_prune.integrations.hf`: Hugging Face ``datasets`` (extra ``[hf]``).
* :mod:`~lightning_prune.integrations.litdata`: LitData's ``StreamingDataset`` and ``optimize``
  (extra ``[litdata]``).
* :mod:`~lightning_prune.integrations.export`: a selection as a sorted ``.npy`` of ids, CSV, Parquet,
  a pruned ``datasets.Dataset`` or a pruned LitData copy, each with its manifest.

Nothing here is imported by ``import lightning_prune``; each optional package is imported when an
integration that needs it is first used, and its absence is an ``ImportError`` naming the extra.
"""
