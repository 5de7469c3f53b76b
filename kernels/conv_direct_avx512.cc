// The direct convolution (conv_direct_simd.inc) for AVX-512F, chosen at run time
#define FEDGE_KERNEL_VARIANT(name) name##_avx512
#define FEDGE_KERNEL_TARGET __attribute__((target("avx512f,avx2,fma")))
#define FEDGE_DIRECT_V16_IS_ONE_REGISTER 1
#include "kernels/conv_direct_simd.inc"
