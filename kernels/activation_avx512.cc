// Activations (activation_simd.inc) built with the avx512 flags of kernels/CMakeLists.txt.
#define FEDGE_KERNEL_VARIANT(name) name##_avx512
#include "kernels/activation_simd.inc"
