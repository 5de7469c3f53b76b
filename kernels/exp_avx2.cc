// Exp kernels (exp_simd.inc) for AVX2 + FMA, chosen at run time
#define FEDGE_KERNEL_VARIANT(name) name##_avx2
#define FEDGE_KERNEL_TARGET __attribute__((target("avx2,fma")))
#include "kernels/exp_simd.inc"
