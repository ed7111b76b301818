"""Shipped pipeline presets (TOML)."""
