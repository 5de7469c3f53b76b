#define FEDGE_SGEMM_NAME Sgemm_avx512
#include "kernels/sgemm_eigen.inc"
