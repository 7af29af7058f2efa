"""mmz: photometric redshifts with PDFs from multi-band survey images.

The package implements the multimodal inception network of the paper in
``shared/reference/paper.md`` behind a command-line tool, ``mmz``.  Modules
are light to import: torch, astropy and zarr are imported inside the
functions that need them, so that ``mmz --help`` answers at once.
"""

__version__ = "0.1.0"
