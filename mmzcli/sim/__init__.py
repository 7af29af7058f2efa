"""``mmz simulate``: a realistic multi-band survey (tiles, spectroscopic sample, truth).

The optional ``[sim]`` dependencies (GalSim, sedpy, speclite, extinction, kcorrect)
are imported only inside this package.  ``sed`` holds the spectra (templates,
dust, IGM, filters), ``population`` the galaxies and stars, ``render`` the
pixels, and ``survey`` lays out the sky and writes the project.
"""
