// Seeded partitioners: split example indices among simulated clients, IID or non-IID, as in
// NIID-Bench (Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study",
// ICDE 2022; github.com/Xtra-Computing/NIID-Bench, partition_data()).
//
//   FEDGE_ASSIGN_OR_RETURN(ClientIndices parts,
//                          LabelDirichlet(train.labels, train.num_classes, 100, 0.5, seed));
//   Dataset client7 = Subset(train, parts[7]);
//
// Every partitioner is a pure function of its arguments: the same (inputs, seed) gives the
// same partition on every platform (all randomness comes from base::Rng(seed)). The results
// are disjoint (no index twice); all but KClassesPerClient cover every example (see there).
// Invalid arguments give kInvalidArgument with a message starting "Partition: ".
#ifndef FEDGE_DATA_PARTITION_H_
#define FEDGE_DATA_PARTITION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::data {

// client → the indices of its examples.
using ClientIndices = std::vector<std::vector<int>>;

// How many times the rejection loops of LabelDirichlet and QuantitySkew redraw before giving
// up with kInvalidArgument (the arguments make min_size practically unreachable).
inline constexpr int kMaxPartitionAttempts = 1000;

// NIID-Bench "homo": a random permutation of 0..num_examples-1 cut into num_clients
// contiguous pieces as evenly as possible (the first num_examples % num_clients clients get
// one extra example). REQUIRES 1 <= num_clients <= num_examples.
absl::StatusOr<ClientIndices> Iid(int num_examples, int num_clients, uint64_t seed);

// NIID-Bench "noniid-labeldir" (distribution-based label skew). One attempt: for each class
// k in 0..num_classes-1, shuffle k's indices, draw p ~ Dir(alpha, ..., alpha) over clients,
// set p_j = 0 for every client already holding >= N / num_clients examples, renormalize,
// and cut k's shuffled indices at floor(cumsum(p) × |k|). Attempts repeat (each from scratch)
// until the smallest client holds >= min_size examples, then each client's list is shuffled.
// Small alpha (0.1) → few classes per client; large alpha (100) → near IID.
// One guard the reference lacks: if every client still below the balance cap drew p_j = 0
// (possible for tiny alpha, where it would divide by zero), the whole class goes to one of
// those clients chosen uniformly at random.
// Errors: num_classes <= 0, a label outside [0, num_classes), num_clients <= 0 or more than
// the examples, alpha <= 0 or not finite, min_size < 0 or min_size × num_clients > N, and
// no acceptable draw within kMaxPartitionAttempts.
absl::StatusOr<ClientIndices> LabelDirichlet(const std::vector<int32_t>& labels, int num_classes,
                                             int num_clients, double alpha, uint64_t seed,
                                             int min_size = 10);

// NIID-Bench "noniid-#label{k}" (quantity-based label skew): client i holds class
// i % num_classes and k - 1 further distinct classes drawn uniformly at random; each class's
// shuffled examples are split as evenly as possible among the clients holding it. So every
// client sees at most k labels (fewer if a held class has no examples). When num_clients <
// num_classes some class may be held by no client: its examples are then in no client's list
// (as in the reference); PartitionClassCounts() shows it. REQUIRES 1 <= k <= num_classes.
absl::StatusOr<ClientIndices> KClassesPerClient(const std::vector<int32_t>& labels, int num_classes,
                                                int num_clients, int k, uint64_t seed);

// NIID-Bench "iid-diff-quantity" (quantity skew): a random permutation cut at
// floor(cumsum(p) × N) with p ~ Dir(alpha, ..., alpha), redrawn until every client holds
// >= min_size examples. (The reference tests p_j × N >= min_size before rounding; this
// tests the actual sizes, so min_size is a guarantee.) Labels are IID within each client.
absl::StatusOr<ClientIndices> QuantitySkew(int num_examples, int num_clients, double alpha,
                                           uint64_t seed, int min_size = 10);

// NIID-Bench's own splits, bit for bit: the reference's partition_data() run after
// np.random.seed(seed), with numpy's generator (data/numpy_random.h), so that seed 0 gives the
// very split of the NIID-Bench paper and of Python reproductions that seed numpy the same way
// (Flower's and PyTorch's baselines for Fashion-MNIST label-Dirichlet α = 0.5, seed 0).
// The algorithms are those of Iid and LabelDirichlet above; only the random stream differs.
// Two departures, both where the reference would fail: the redraw loop gives up after
// kMaxPartitionAttempts, and a class that no client below the balance cap can take (every
// such p_j drew 0, where the reference divides by zero) is an error.
absl::StatusOr<ClientIndices> NiidBenchIid(int num_examples, int num_clients, uint32_t seed);
absl::StatusOr<ClientIndices> NiidBenchLabelDirichlet(const std::vector<int32_t>& labels,
                                                      int num_classes, int num_clients,
                                                      double alpha, uint32_t seed,
                                                      int min_size = 10);

// Which random stream a split is drawn from: base::Rng (kFedge: Iid, LabelDirichlet) or
// numpy's (kNumpy: NiidBenchIid, NiidBenchLabelDirichlet, NIID-Bench's very split).
enum class SplitStream { kFedge, kNumpy };

// "fedge" or "numpy"; anything else is kInvalidArgument naming both.
absl::StatusOr<SplitStream> ParseSplitStream(absl::string_view name);

// Iid / LabelDirichlet on `stream`. With kNumpy the seed must be below 2^32, numpy's range
// (kInvalidArgument otherwise).
absl::StatusOr<ClientIndices> IidFrom(SplitStream stream, int num_examples, int num_clients,
                                      uint64_t seed);
absl::StatusOr<ClientIndices> LabelDirichletFrom(SplitStream stream,
                                                 const std::vector<int32_t>& labels,
                                                 int num_classes, int num_clients, double alpha,
                                                 uint64_t seed, int min_size = 10);

// OK if every index is in [0, num_examples) and appears at most once over all clients.
absl::Status ValidatePartition(const ClientIndices& parts, int num_examples);

// counts[client][class]: how many of the client's examples have each label. Errors if an
// index is outside labels or a label outside [0, num_classes).
absl::StatusOr<std::vector<std::vector<int>>> PartitionClassCounts(
    const std::vector<int32_t>& labels, int num_classes, const ClientIndices& parts);

// A fixed-width text table of PartitionClassCounts() output, one row per client with its
// total, then a row of per-class totals:
//   client      0     1 ...  total
//        0    512     0 ...    601
std::string FormatClassCounts(const std::vector<std::vector<int>>& counts);

}  // namespace fedge::data

#endif  // FEDGE_DATA_PARTITION_H_
