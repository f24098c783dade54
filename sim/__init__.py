"""SimPy model of MoE serving with size-B expert queues. Never imports torch."""
