"""mpqdm: extremely low-bit diffusion models, from PyTorch to a C program on the board."""

__version__ = "0.1.0"
