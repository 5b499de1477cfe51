"""Images: reading and writing picture files, and the pictures' forms inside the program.

* :mod:`~derain_cli.images.formats`: the formats the tool reads and writes, named by suffix.
* :mod:`~derain_cli.images.io`: decode and encode with EXIF orientation, ICC, alpha, 16-bit.
* :mod:`~derain_cli.images.exif`: EXIF surgery (orientation, thumbnails, TIFF layout tags).
* :mod:`~derain_cli.images.codecs`: the PNG and TIFF writers.
* :mod:`~derain_cli.images.tensors`: numpy pictures to generator tensors and back.
* :mod:`~derain_cli.images.pixels`: the Python API's pictures (PIL, uint8/uint16/float) to float
  RGB and back to the caller's type.
"""
