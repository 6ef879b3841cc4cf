"""Data sources (one module per LRA source) and the batch pipeline."""
