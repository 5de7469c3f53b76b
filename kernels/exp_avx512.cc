// Exp kernels (exp_simd.inc) for AVX-512F, chosen at run time
#define FEDGE_KERNEL_VARIANT(name) name##_avx512
#define FEDGE_KERNEL_TARGET __attribute__((target("avx512f")))
#include "kernels/exp_simd.inc"
