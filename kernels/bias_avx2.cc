// Bias add and its gradient (bias_simd.inc) built with the avx2 flags of
// kernels/CMakeLists.txt.
#define FEDGE_KERNEL_VARIANT(name) name##_avx2
#include "kernels/bias_simd.inc"
