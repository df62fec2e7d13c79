"""Fake-quant UNet: quantizers, module swap, calibration, OMQ, export and the integer reference."""
