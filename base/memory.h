// Process-wide memory settings for the programs that move model-sized buffers every round.
#ifndef FEDGE_BASE_MEMORY_H_
#define FEDGE_BASE_MEMORY_H_

namespace fedge::base {

// Serves large allocations (a round's sums, decoded updates: tens of MB for a 10M-parameter
// model) from the heap and keeps freed memory in the process for the next round, instead of
// a fresh mmap per buffer that munmap returns to the system at the end of each round. On the
// VMs we measured, pages freshly mapped and touched stay slow to write for a while:
// averaging 10 updates of 10M floats into a new 40 MB sum ran at 14 GB/s against 47 GB/s
// into reused memory (bench/fedavg_bench). The cost: the process keeps its peak heap.
// glibc only (mallopt); elsewhere a no-op. Returns whether the setting took effect. Call
// once, early in main, before threads start.
bool KeepFreedMemoryForReuse();

// A device's policy, where the peak RSS is the budget: blocks from 64 KiB up are mapped
// and unmapped on free, a fixed threshold (glibc raises its default 128 KiB threshold to
// the size of each mapped block freed, up to 32 MiB, after which such blocks come from the
// heap and what is freed around them stays in the process). A device loading its base
// frees the file's values and the frozen weights' gradients before training starts; with
// this policy the training's buffers reuse those pages instead of adding to the peak
// (bench/lm_device_memory: 54 MB → 44 MB after loading the language model's base). glibc
// only; elsewhere a no-op. Returns whether the setting took effect. Call once, early in
// main.
bool ReturnFreedMemory();

// Models at least this large (their parameters' bytes) get KeepFreedMemoryForReuse.
inline constexpr long long kKeepFreedMemoryFromModelBytes = 16LL << 20;

// The policy sized to the model a program is about to work on: KeepFreedMemoryForReuse for a
// model of kKeepFreedMemoryFromModelBytes or more, whose round buffers are large; otherwise
// glibc's defaults (blocks over 128 KiB mapped and unmapped, the heap's free top trimmed), and
// the free memory held so far returned to the system (malloc_trim). A small model's buffers
// are cheap to map and the kept peak (for instance a job's start-up) would be most of the
// process. Returns whether freed memory is now kept. May be called again for each job, from
// any thread (glibc reads the thresholds at each allocation).
bool SizeFreedMemoryPolicy(long long model_bytes);

}  // namespace fedge::base

#endif  // FEDGE_BASE_MEMORY_H_
