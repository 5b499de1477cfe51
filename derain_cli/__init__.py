"""derain: remove rain from real photographs with NLCL (CVPR 2022)."""

__version__ = "0.1.0"
