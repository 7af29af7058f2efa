"""Source detection with ``sep`` (the SExtractor library) for ``mmz predict --detect``.

The detection image of a tile is the inverse-variance weighted sum of its
detection bands (the profile's ``detection_bands``), in units of its own noise:
sum_b(f_b / s_b^2) / sqrt(sum_b 1 / s_b^2).  Its noise is Gaussian with sigma 1,
so SExtractor's usual threshold in sigma applies as it does on one band.  (The
paper's CFHTLS catalogues used a gri chi^2 image, whose noise is chi-distributed;
the weighted sum is the DES-style alternative and is as sensitive for sources
detected in every detection band.)  Bands on another pixel grid than the
reference image are left out of it.
"""

from __future__ import annotations

import numpy as np

from mmzcli.errors import InputError
from mmzcli.tiles import pixel_to_sky, sky_to_pixel, tile_pixels

THRESHOLD = 1.5  # sigma per pixel, after the matched filter (SExtractor's DETECT_THRESH)
MIN_AREA = 5  # pixels (DETECT_MINAREA)
DEBLEND_NTHRESH, DEBLEND_CONT = 32, 0.001  # SExtractor's default levels; DES's contrast (default 0.005)


def same_grid(a, b) -> bool:
    """Whether two tile images share their pixel grid (shape and WCS within 0.01 px)."""
    if a.shape != b.shape:
        return False
    ny, nx = a.shape
    x = np.array([0.0, nx - 1.0, 0.0, nx - 1.0])
    y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0])
    ra, dec = pixel_to_sky(a, x, y)
    xb, yb = sky_to_pixel(b, ra, dec)
    return bool(np.all(np.hypot(xb - x, yb - y) < 0.01))


def detection_image(images) -> np.ndarray:
    """The noise-weighted sum of ``images`` (TileImage, same grid), with unit noise; NaN where none has data."""
    import sep

    signal: np.ndarray | float = 0.0  # sums over the images
    weight: np.ndarray | float = 0.0
    for image in images:
        data = np.array(tile_pixels(image), dtype=np.float32)  # sep wants native byte order
        bad = ~np.isfinite(data)
        data[bad] = 0.0
        background = sep.Background(data, mask=bad)
        inverse_variance = np.where(bad, 0.0, 1.0 / np.square(background.globalrms))
        signal = signal + (data - background.back()) * inverse_variance
        weight = weight + inverse_variance
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, signal / np.sqrt(weight), np.nan).astype(np.float32)


def detect(reference, images) -> dict[str, np.ndarray]:
    """Sources found on the detection image of the tile of ``reference``.

    ``images`` are the tile images of the detection bands; those on another grid
    than ``reference`` are left out.  Returns 0-based pixel positions (x, y) on
    the reference grid, RA/Dec (deg) and the detection S/N.
    """
    import sep

    usable = [image for image in images if same_grid(reference, image)]
    if not usable:
        raise InputError(
            f"{reference.path}: no detection band on this tile's pixel grid; "
            f"give the tiles of the profile's detection_bands"
        )
    data = detection_image(usable)
    mask = ~np.isfinite(data)
    data[mask] = 0.0
    sep.set_extract_pixstack(max(300_000, data.size // 4))
    sep.set_sub_object_limit(4096)
    objects = sep.extract(
        data,
        THRESHOLD,
        err=1.0,
        mask=mask,
        minarea=MIN_AREA,
        deblend_nthresh=DEBLEND_NTHRESH,
        deblend_cont=DEBLEND_CONT,
    )
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    ra, dec = pixel_to_sky(reference, x, y)
    snr = objects["flux"] / np.sqrt(np.maximum(objects["npix"], 1))
    return {"x": x, "y": y, "ra": ra, "dec": dec, "snr": snr, "bands": [image.band for image in usable]}
