#include "kernels/sgemm.h"

#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

sgemm_detail::SgemmFn Pick() {
#if FEDGE_KERNELS_X86
  const Isa isa = BestIsa();
  if (isa >= Isa::kAvx512Vnni) return sgemm_detail::Sgemm_avx512;
  if (isa >= Isa::kAvx2) return sgemm_detail::Sgemm_avx2;
#endif
  // The baseline copy: SSE2 on x86-64; elsewhere the target's own SIMD (NEON on aarch64).
  return sgemm_detail::Sgemm_sse2;
}

}  // namespace

void Sgemm(Trans trans_a, Trans trans_b, int m, int n, int k, float alpha, const float* a,
           int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  static const sgemm_detail::SgemmFn fn = Pick();
  fn(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace fedge::kernels
