"""Headless visualisation: ray-cast renders, overlays, scene views and image grids."""
