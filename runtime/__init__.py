"""Data package: the C runtime's sources (a C project of its own: runtime/Makefile)."""
