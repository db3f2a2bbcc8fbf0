"""Datasets: recording demonstrations, readers for public formats, the zarr cache, loaders."""
