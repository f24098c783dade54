"""Per-expert latency profiles: ``hw profile`` (model loading, timing sweep, SLURM submission)."""
