"""Graph capture under torch.compile, order application, and real peak-memory measurement."""
