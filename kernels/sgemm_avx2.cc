#define FEDGE_SGEMM_NAME Sgemm_avx2
#include "kernels/sgemm_eigen.inc"
