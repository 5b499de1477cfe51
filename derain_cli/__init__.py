"""derain: remove rain from real photographs and videos with NLCL (CVPR 2022).

The Python API, in the manner of diffusers and rembg (see docs/api.md)::

    from derain_cli import Derainer

    derainer = Derainer.from_pretrained("default")     # or a file, a name, hf://OWNER/REPO
    clean = derainer.derain_image(photo)               # PIL image or numpy array, same type back

* :class:`Derainer`: one image at a time (whole or tiled); ``derainer(rgb)`` on float arrays.
* :class:`DerainerSettings`: device, precision, tile and overlap, checked once before loading.
* :func:`derain_video`: one video file to another, with :class:`VideoOptions` (encoder,
  :class:`TemporalSettings`).
* :func:`load_weights`: weights from any spec, as :class:`~derain_cli.weights.files.LoadedWeights`.

Names are imported on first use, so ``import derain_cli`` (and ``derain --version``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from derain_cli._moved import install_old_paths
from derain_cli.version import __version__

if TYPE_CHECKING:
    from derain_cli.inference.engine import Derainer
    from derain_cli.inference.settings import DerainerSettings
    from derain_cli.video.consistency import TemporalSettings
    from derain_cli.video.pipeline import VideoOptions, derain_video
    from derain_cli.weights.loading import load_weights

_LAZY = {
    "Derainer": "derain_cli.inference.engine",
    "DerainerSettings": "derain_cli.inference.settings",
    "derain_video": "derain_cli.video.pipeline",
    "VideoOptions": "derain_cli.video.pipeline",
    "TemporalSettings": "derain_cli.video.consistency",
    "load_weights": "derain_cli.weights.loading",
}
__all__ = [
    "Derainer",
    "DerainerSettings",
    "TemporalSettings",
    "VideoOptions",
    "__version__",
    "derain_video",
    "load_weights",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


install_old_paths()
