#define FEDGE_SGEMM_NAME Sgemm_sse2
#include "kernels/sgemm_eigen.inc"
