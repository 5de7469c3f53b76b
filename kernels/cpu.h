// CPU feature detection and the instruction-set variants of fedge's kernels.
//
// Every quantized kernel exists as a scalar reference (`*_ref`, always built, never clever),
// a portable version (plain C++, any CPU), and per-ISA variants built from files that alone
// carry the ISA's compiler flags. The variant is picked at run time by BestIsa(); the
// FEDGE_ISA environment variable (ref, portable, avx2, avx512vnni, neondot, neoni8mm) caps
// it, for testing and for comparing variants on one machine.
//
// The AVX2 and AVX-512 variants exist only in x86-64 builds (FEDGE_KERNELS_X86 == 1), the
// NEON dotprod variants only in aarch64 builds (FEDGE_KERNELS_AARCH64 == 1); the build leaves
// the other files out (kernels/CMakeLists.txt), and CpuSupports() is false for an ISA of the
// other architecture. kNeonDot is chosen from the kernel's HWCAP (HWCAP_ASIMDDP), kNeonI8mm
// from HWCAP2_I8MM as well; an aarch64 CPU without dotprod runs the portable kernels, plain
// C++ the compiler vectorizes for NEON.
// Kernel families without a variant for an ISA run their portable one under it.
#ifndef FEDGE_KERNELS_CPU_H_
#define FEDGE_KERNELS_CPU_H_

#if defined(__x86_64__)
#define FEDGE_KERNELS_X86 1
#else
#define FEDGE_KERNELS_X86 0
#endif
#if defined(__aarch64__)
#define FEDGE_KERNELS_AARCH64 1
#else
#define FEDGE_KERNELS_AARCH64 0
#endif

namespace fedge::kernels {

enum class Isa {
  kRef = 0,         // scalar reference
  kPortable = 1,    // plain C++ written for the compiler's auto-vectorizer; any CPU
  kAvx2 = 2,        // AVX2 + FMA (Haswell, Zen 1 and later)
  kAvx512Vnni = 3,  // AVX-512 F/BW/VL + VNNI (Cascade Lake, Ice Lake, Zen 4 and later)
  kNeonDot = 4,     // aarch64 with the dotprod extension, SDOT (Cortex-A55/A76 and later)
  kNeonI8mm = 5,    // aarch64 with dotprod and the int8 matrix multiply, SMMLA (Neoverse V1/N2,
                    // Cortex-A510/A710 and later)
};

// True when this CPU (and OS, for the wider registers) can run code built for `isa`.
bool CpuSupports(Isa isa);

// The best variant this CPU supports, capped by FEDGE_ISA when that is set.
Isa BestIsa();

// "ref", "portable", "avx2", "avx512vnni", "neondot", "neoni8mm".
const char* IsaName(Isa isa);

// `isa` when this CPU supports it, else the best variant below it (kPortable at the least).
Isa UsableIsa(Isa isa);

}  // namespace fedge::kernels

// The one run-time dispatcher of every kernel family: returns fn's variant for the
// variable `isa` in scope (fn##_avx512, fn##_avx2, fn##_ref or fn##_portable), the best
// this CPU can run at or below it, called with the remaining arguments.
#if FEDGE_KERNELS_X86
#define FEDGE_KERNEL_DISPATCH(fn, ...)                    \
  switch (::fedge::kernels::UsableIsa(isa)) {             \
    case ::fedge::kernels::Isa::kAvx512Vnni:              \
      return fn##_avx512(__VA_ARGS__);                    \
    case ::fedge::kernels::Isa::kAvx2:                    \
      return fn##_avx2(__VA_ARGS__);                      \
    case ::fedge::kernels::Isa::kRef:                     \
      return fn##_ref(__VA_ARGS__);                       \
    default: /* kPortable */                              \
      return fn##_portable(__VA_ARGS__);                  \
  }
#else
#define FEDGE_KERNEL_DISPATCH(fn, ...)                    \
  switch (::fedge::kernels::UsableIsa(isa)) {             \
    case ::fedge::kernels::Isa::kRef:                     \
      return fn##_ref(__VA_ARGS__);                       \
    default: /* kPortable */                              \
      return fn##_portable(__VA_ARGS__);                  \
  }
#endif

namespace fedge::kernels {

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_CPU_H_
