"""Console entry points; the scripts in tools/ call these ``main`` functions."""
