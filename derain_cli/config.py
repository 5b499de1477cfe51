"""Typed, frozen configuration for every part of derain (one place for every hyper-parameter).

Sections: model (generators), sampler (non-local search), losses (the paper's terms and weights),
training (optimisation, data, runtime). Loaded from TOML (``--config``), printable, and saved in
every run folder and checkpoint. Defaults follow the paper (``../shared/paper``); where the
authors' released code differs, both are options and ``docs/training.md`` says which is default.
"""

from __future__ import annotations
