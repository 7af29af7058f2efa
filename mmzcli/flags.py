"""The per-source bit flags of stores and catalogues (int32, OR-ed over bands).

One definition: ``cutout`` and ``predict`` set them, ``build-cubes`` adds the
redshift ones, and the catalogue's FLAGS column describes them from here.
"""

from __future__ import annotations

import enum


class Flag(enum.IntFlag):
    EDGE = 1  # the stamp runs off the tile in some band; missing pixels are 0
    NAN_PIXELS = 2  # some pixels were NaN/inf; they are 0
    MISSING_BAND = 4  # some band has no tile covering the source (its stamp is 0, band_ok False)
    OUTSIDE = 8  # no tile of any band covers the source: all stamps are 0
    RESAMPLED = 16  # some band was resampled rather than sliced
    NO_ZSPEC = 32  # build-cubes: no usable spectroscopic redshift
    ZSPEC_OUT_OF_GRID = 64  # build-cubes: z_spec outside the profile's redshift grid
    EBV_DEFAULT = 128  # predict: no E(B-V) was given for the source; the training sample's median was used


# the flags a photo-z catalogue can carry, as its FLAGS column describes them
CATALOG_FLAG_TEXT = {
    Flag.EDGE: "edge",
    Flag.NAN_PIXELS: "NaN pixels",
    Flag.MISSING_BAND: "missing band",
    Flag.OUTSIDE: "outside",
    Flag.RESAMPLED: "resampled",
    Flag.EBV_DEFAULT: "E(B-V) defaulted",
}
UNLABELLED = Flag.NO_ZSPEC | Flag.ZSPEC_OUT_OF_GRID | Flag.OUTSIDE  # rows training cannot use


def describe_catalog_flags() -> str:
    """The TCOMM text of the FLAGS column: every bit a catalogue can carry."""
    bits = ", ".join(f"{int(flag)} {text}" for flag, text in CATALOG_FLAG_TEXT.items())
    return f"bit flags: {bits} (see docs/formats.md)"
