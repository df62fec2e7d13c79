"""Data package: the embedded default model (mnist-default) and the FD classifier."""
