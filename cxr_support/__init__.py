"""Support code for the chest X-ray series: you do not need to read it to follow the lessons.

The lessons' own code (the model, the training loop, the metrics, ...) is in the notebooks
and in ``cxr_utils.py``. This package holds what a learner can take on trust, one file per
concern, in layers: generic pieces at the bottom, concerns above them, each module listed
after every module of the package that it imports. No import cycle, and no import of the
package inside a function (``tests/test_layers.py`` checks all three).

Generic, at the bottom (they import nothing of the package):

- ``errors``: ``DataError``, and any exception summed up in one line;
- ``paths``: the project folder, and paths as printable text;
- ``names``: the class and split folder names of the Kaggle layout;
- ``switches``: on/off settings read from text (``parse_bool``);
- ``provenance``: when and with which libraries a file was made;
- ``atomic_files``: writes that never leave half a file;
- ``devices``: which accelerators this machine has;
- ``progress``: progress bars that a saved notebook shows finished.

Concerns, above them:

- ``hosted``: Colab and Kaggle: carrying the run dir from one notebook's runtime to the next;
- ``images``: decoding image files of any mode to 8-bit grayscale;
- ``synthetic``: the synthetic X-ray-like sample used when no real data is found;
- ``weights``: loading the ImageNet weights, loudly falling back when offline;
- ``download``: downloading the dataset: Mendeley's zip (no account) or Kaggle's copy;
- ``dataset``: finding and listing the dataset's files; the saved split;
- ``pixel_cache``: decoding every image once into a tensor, cached on disk;
- ``feature_cache``: the frozen backbone's features, computed once and cached;
- ``external``: another hospital's films (``CXR_EXTERNAL_DIR``), checked and decoded once;
- ``plots`` and ``tables``: the figures and tables of the notebooks;
- ``records``: one JSON record per run;
- ``model_card``: a model card written from a run's record;
- ``checkpoints``: writing and reading checkpoint files safely;
- ``config``: the one config of a run, from ``CXR_*`` environment variables;
- ``jovian_transport``: checking that Jovian is configured and reachable, within a deadline.

Imports go one way: ``cxr_utils`` uses this package; nothing here imports ``cxr_utils``.
"""
