"""Held-out evaluation: the test region and realisations, measured and reported."""
