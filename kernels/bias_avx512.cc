// Bias add and its gradient (bias_simd.inc) built with the avx512 flags of
// kernels/CMakeLists.txt.
#define FEDGE_KERNEL_VARIANT(name) name##_avx512
#include "kernels/bias_simd.inc"
