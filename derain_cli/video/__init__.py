"""Video in, video out: PyAV decoding and encoding, a temporal filter, a flicker measure.

:func:`~derain_cli.video.pipeline.derain_video` derains one file;
:mod:`~derain_cli.video.formats` says which names are videos (no FFmpeg import);
:mod:`~derain_cli.video.temporal` holds the temporal-consistency filter and
:mod:`~derain_cli.video.flicker` the measure it is judged by.
"""
