"""Backend: TVM-generated bit-packed mixed-precision kernels, lowering and the artifact."""
