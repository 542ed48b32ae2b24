"""Model and run presets (TOML files), shipped as package data."""
