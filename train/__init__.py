"""Training and evaluation entry points (the only package that imports hydra)."""
