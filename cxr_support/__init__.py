"""Support code for the chest X-ray series: you do not need to read it to follow the lessons.

The lessons' own code (the model, the training loop, the metrics, ...) is in the notebooks
and in ``cxr_utils.py``. This package holds what a learner can take on trust, one file per
concern:

- ``config``: the one config of a run, from ``CXR_*`` environment variables;
- ``dataset``: finding, downloading and listing the dataset's files; the saved split;
- ``images``: decoding image files of any mode to 8-bit grayscale;
- ``pixel_cache``: decoding every image once into a tensor, cached on disk;
- ``synthetic``: the synthetic X-ray-like sample used when no real data is found;
- ``atomic_files``: writes that never leave half a file;
- ``checkpoints``: writing and reading checkpoint files safely;
- ``weights``: loading the ImageNet weights, loudly falling back when offline;
- ``records``: one JSON record per run;
- ``jovian_transport``: checking that Jovian is configured and reachable, every call within a deadline;
- ``plots`` and ``tables``: the figures and tables of the notebooks.

Imports go one way: ``cxr_utils`` uses this package; nothing here imports ``cxr_utils``.
"""
