"""TensorIR kernels: quantized conv / dense on packed weights, input quantization, FP ops."""
