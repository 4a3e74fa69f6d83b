"""Quality evaluation of vlsr_core on seeded synthetic data (see docs/quality.md)."""
