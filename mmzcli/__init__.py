"""mmz: photometric redshifts with PDFs from multi-band survey images.

The package implements the multimodal inception network of Ait Ouahmed et al.
(2024, A&A 683, A26; arXiv:2310.02185) behind a command-line tool, ``mmz``
(docs/design.md maps the modules).  Modules
are light to import: torch, astropy and zarr are imported inside the
functions that need them, so that ``mmz --help`` answers at once.
"""

__version__ = "0.2.0.dev0"
