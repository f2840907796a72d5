"""Cameras, rotations, projections and Procrustes alignment (torch, batched)."""
