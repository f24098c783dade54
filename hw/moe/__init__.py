"""delta-MoE: Mixture-of-Experts classifiers with fixed or per-sample k, trained and measured."""
