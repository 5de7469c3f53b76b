// im2col / col2im (conv_simd.inc) built with the avx2 flags of kernels/CMakeLists.txt.
#define FEDGE_KERNEL_VARIANT(name) name##_avx2
#include "kernels/conv_simd.inc"
