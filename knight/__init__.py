"""Knight: an agentic optimizer for accelerator kernels."""

__version__ = "0.1.0"
