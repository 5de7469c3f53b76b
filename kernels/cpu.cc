#include "kernels/cpu.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace fedge::kernels {
namespace {

#if FEDGE_KERNELS_X86
bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool DetectAvx512Vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && DetectAvx2();
}
#else
// Not built for x86-64: the x86 variants are not in the binary.
bool DetectAvx2() { return false; }
bool DetectAvx512Vnni() { return false; }
#endif

#if FEDGE_KERNELS_AARCH64 && defined(__linux__)
bool DetectNeonDot() { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
bool DetectNeonI8mm() { return DetectNeonDot() && (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0; }
#else
bool DetectNeonDot() { return false; }
bool DetectNeonI8mm() { return false; }
#endif

Isa DetectBest() {
  Isa best = DetectAvx512Vnni() ? Isa::kAvx512Vnni
             : DetectAvx2()     ? Isa::kAvx2
             : DetectNeonI8mm() ? Isa::kNeonI8mm
             : DetectNeonDot()  ? Isa::kNeonDot
                                : Isa::kPortable;
  if (const char* cap = std::getenv("FEDGE_ISA")) {
    for (Isa isa : {Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeonDot,
                    Isa::kNeonI8mm}) {
      if (std::strcmp(cap, IsaName(isa)) == 0 && isa < best) best = isa;
    }
  }
  return best;
}

}  // namespace

bool CpuSupports(Isa isa) {
  switch (isa) {
    case Isa::kRef:
    case Isa::kPortable:
      return true;
    case Isa::kAvx2:
      return DetectAvx2();
    case Isa::kAvx512Vnni:
      return DetectAvx512Vnni();
    case Isa::kNeonDot:
      return DetectNeonDot();
    case Isa::kNeonI8mm:
      return DetectNeonI8mm();
  }
  return false;
}

Isa BestIsa() {
  static const Isa best = DetectBest();
  return best;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kRef:
      return "ref";
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
    case Isa::kNeonDot:
      return "neondot";
    case Isa::kNeonI8mm:
      return "neoni8mm";
  }
  return "unknown";
}

Isa UsableIsa(Isa isa) {
  while (isa > Isa::kPortable && !CpuSupports(isa)) {
    isa = static_cast<Isa>(static_cast<int>(isa) - 1);
  }
  return isa;
}

}  // namespace fedge::kernels
