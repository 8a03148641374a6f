"""What users run besides training, each on a trained checkpoint or a run.

- :mod:`unreid.apps.inference`: rebuild a checkpoint's model, evaluate it on a
  dataset (``unreid eval``), extract features to a file (``unreid extract``).
- :mod:`unreid.apps.search`: rank a gallery for query images (``unreid search``).
- :mod:`unreid.apps.export`: export the model to ONNX (``unreid export``).
- :mod:`unreid.apps.demo`: synthetic world -> training -> report (``unreid demo``).

Submodules are imported on use, so ``unreid --help`` stays fast.
"""
