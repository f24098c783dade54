"""Everything that runs torch on a real device: capture, verify, MoE, profiles, serving."""
