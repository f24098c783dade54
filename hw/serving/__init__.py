"""Real queued MoE serving: ``hw serve`` (workload, threaded server, sweep, CLI)."""
