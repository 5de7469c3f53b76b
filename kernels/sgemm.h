// fp32 GEMM through Eigen, compiled once per ISA and chosen at run time.
//
// Eigen picks its SIMD width at compile time, so kernels/sgemm_eigen.inc is compiled three
// times (baseline SSE2, AVX2+FMA, AVX-512F), each copy with Eigen's namespace renamed by the
// preprocessor (-DEigen=fedge_eigen_<isa>) so that the three instantiations of Eigen's
// templates never merge at link time (an ODR trap that would silently run one ISA's code
// everywhere, or crash an older CPU).
#ifndef FEDGE_KERNELS_SGEMM_H_
#define FEDGE_KERNELS_SGEMM_H_

namespace fedge::kernels {

enum class Trans { kNo, kYes };

// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major with leading dimensions (row
// strides) lda, ldb, ldc. op(A) is m×k: A is m×k (kNo, lda ≥ k) or k×m (kYes, lda ≥ m);
// op(B) is k×n: B is k×n (kNo) or n×k (kYes). With beta == 0, C is not read (it may hold
// garbage). Single-threaded. REQUIRES: C does not alias A or B.
void Sgemm(Trans trans_a, Trans trans_b, int m, int n, int k, float alpha, const float* a,
           int lda, const float* b, int ldb, float beta, float* c, int ldc);

// The variants, for tests and benchmarks. Call only those the CPU supports.
namespace sgemm_detail {
using SgemmFn = void (*)(Trans, Trans, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
void Sgemm_sse2(Trans, Trans, int, int, int, float, const float*, int, const float*, int,
                float, float*, int);
void Sgemm_avx2(Trans, Trans, int, int, int, float, const float*, int, const float*, int,
                float, float*, int);
void Sgemm_avx512(Trans, Trans, int, int, int, float, const float*, int, const float*, int,
                  float, float*, int);
}  // namespace sgemm_detail

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_SGEMM_H_
