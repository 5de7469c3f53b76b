// Where virtual clients' examples come from. A client's Dataset is built only
// when it trains and dropped afterwards, so memory is bounded by the clients training at
// once, not by the population:
//   - Fashion-MNIST: the train split is loaded once and cut into `partitions` disjoint
//     shards (data/partition.h); client c holds shard c mod partitions and its Dataset is
//     a copy of those examples. Shards are index lists (60,000 ints in all, whatever N).
//     Over more than 100 shards the Dirichlet partitioners (label or quantity skew) cut
//     100 groups, then each group is split evenly among its shards (s mod 100 = group).
//   - synthetic: Gaussian clusters (proto/sim.proto, SyntheticData); client c's examples
//     are generated from (seed, c) on demand and never stored.
//   - brown: text devices for language-model jobs (proto/sim.proto, BrownData): the Brown
//     fiction partitioned by document or genre (data/brown.h PartitionBrown), each
//     partition's documents encoded once, at load, with the base model's tokenizer
//     (data::EncodeDocuments, as a fleet device encodes its text shard); about 4 bytes a
//     token (0.6M tokens for the fiction). A text client's "examples" are its tokens.
// Preprocessing (the job's UNIT_RANGE or STANDARDIZE) is applied to the loaded data.
#ifndef FEDGE_SIM_CLIENT_DATA_H_
#define FEDGE_SIM_CLIENT_DATA_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "proto/sim.pb.h"

namespace fedge::sim {

// Thread-safe: every method is const and may be called from training threads at once.
class ClientDataSource {
 public:
  virtual ~ClientDataSource() = default;
  // Client `client`'s examples (a fresh copy; empty for a text source). REQUIRES:
  // 0 <= client < population.
  virtual data::Dataset ClientData(int64_t client) const = 0;
  // How many examples ClientData(client) holds (a text source: tokens ClientTokens gives),
  // without building it.
  virtual int64_t NumExamples(int64_t client) const = 0;
  // The evaluation set the coordinator scores the central model on; null for a text source.
  virtual std::shared_ptr<const data::Dataset> TestData() const = 0;
  // A text source: client `client`'s token stream (a fresh copy); else empty.
  virtual std::vector<int32_t> ClientTokens(int64_t client) const { return {}; }
  // A text source: the held-out text the coordinator reports perplexity on; else null.
  virtual std::shared_ptr<const std::vector<data::TextDocument>> EvaluationText() const {
    return nullptr;
  }
  // Client `client`'s own test examples (FashionMnistData.client_test_sets: the test half of
  // its shard's part of the test split), or an empty dataset (num_examples 0) without them.
  virtual data::Dataset ClientTestData(int64_t client) const { return data::Dataset(); }
};

// The source `config.data` describes. REQUIRES: `config` validated (ValidateSimConfig).
// Errors: the dataset cannot be read, or the partitioner refuses its arguments; brown: the
// job's base model (config.data_root / job.language_model.base_path) cannot be read or has
// no tokenizer.
absl::StatusOr<std::unique_ptr<ClientDataSource>> MakeClientDataSource(const v1::SimConfig& config);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_CLIENT_DATA_H_
