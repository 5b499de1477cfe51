"""Evaluation: image-quality metrics, scoring derainers on folders, what ``derain eval`` writes.

* :mod:`~derain_cli.evaluation.metrics`: PSNR, SSIM (Y of BT.601), NIQE (its pristine model in
  ``niqe/``).
* :mod:`~derain_cli.evaluation.scoring`: pairing rainy and clean pictures, scoring each weights,
  the report.
* :mod:`~derain_cli.evaluation.files`: the CSV and the comparison grid.
"""
