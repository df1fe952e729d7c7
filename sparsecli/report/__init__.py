"""The report: one page that answers how sparse, which hyperparameters, what it buys on hardware.

``sections.py`` has one function per section, each returning None when its stage has not
run; ``figures.py`` draws the plots (matplotlib, one style); ``render.py`` writes the
self-contained HTML (images inlined) and the Markdown beside it.
"""
