"""NPC: Negative Pre-aware Cross-modal matching (AAAI 2024), reimplemented on open_clip."""

__version__ = "0.5.0"
