"""Video in, video out: PyAV decoding and encoding, temporal consistency, flicker measures.

:func:`~derain_cli.video.pipeline.derain_video` derains one file;
:mod:`~derain_cli.video.formats` says which names are videos (no FFmpeg import);
:mod:`~derain_cli.video.consistency` makes frames consistent over time (the fusion of
:mod:`~derain_cli.video.fusion`, which aligns neighbours with :mod:`~derain_cli.video.align` and
combines them with :mod:`~derain_cli.video.statistic`, cuts from :mod:`~derain_cli.video.cuts`;
then the recursive filter of :mod:`~derain_cli.video.temporal`), and
:mod:`~derain_cli.video.flicker` holds the measures they are judged by.
"""
