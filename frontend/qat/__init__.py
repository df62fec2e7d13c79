"""Data-free quantization-aware training (MPQ-DM: output distillation + TRD)."""
