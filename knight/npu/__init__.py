"""The simulated NPU: a Trainium2-like logical core (two physical cores, LNC=2)."""
