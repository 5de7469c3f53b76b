// Partitions Fashion-MNIST's training set for N devices and writes one shard file per device
// (data/shard.h), for fedge-client --shard.
//
//   build/bin/partition_fmnist --clients 10 --scheme dirichlet --alpha 0.5 --seed 0
//                                 --out out/fleet/shards
//
// Schemes (data/partition.h): iid; dirichlet (label skew, concentration --alpha); kclasses
// (--k classes per client); quantity (sizes skewed by Dirichlet(--alpha), labels iid).
// --train-examples N keeps the first N training examples only (small fleets in tests).
// --rng numpy draws iid and dirichlet splits from numpy's generator after np.random.seed(seed),
// giving NIID-Bench's (and Python baselines') very split for the same seed
// (data::NiidBenchLabelDirichlet); the default, fedge, is base::Rng.
// Pixels stay in [0, 1]; the job's preprocessing decides any normalization. Prints the
// per-client class counts and a summary.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "data/dataset.h"
#include "data/idx_reader.h"
#include "data/partition.h"
#include "data/shard.h"

ABSL_FLAG(int, clients, 10, "number of devices (shards)");
ABSL_FLAG(std::string, scheme, "dirichlet", "iid, dirichlet, kclasses or quantity");
ABSL_FLAG(double, alpha, 0.5, "Dirichlet concentration (dirichlet, quantity)");
ABSL_FLAG(int, k, 2, "classes per client (kclasses)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the split");
ABSL_FLAG(std::string, rng, "fedge",
          "random stream of the split: fedge (base::Rng) or numpy (np.random.seed(seed), "
          "NIID-Bench's split; iid and dirichlet)");
ABSL_FLAG(int, train_examples, 0, "use only the first N training examples (0: all 60000)");
ABSL_FLAG(std::string, data_dir, fedge::data::kFashionMnistDir, "Fashion-MNIST IDX directory");
ABSL_FLAG(std::string, out, "", "directory for client-00000.shard, ... (required)");
ABSL_FLAG(std::vector<std::string>, label_flip, {},
          "devices (indices) whose shards get flipped labels, y -> 9 - y: a hostile device's "
          "data, for measuring the coordinator's defences (docs/security.md)");

namespace fedge {
namespace {

absl::Status Run() {
  const int clients = absl::GetFlag(FLAGS_clients);
  const std::string scheme = absl::GetFlag(FLAGS_scheme);
  const std::string out = absl::GetFlag(FLAGS_out);
  const double alpha = absl::GetFlag(FLAGS_alpha);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  FEDGE_ASSIGN_OR_RETURN(const data::SplitStream stream,
                         data::ParseSplitStream(absl::GetFlag(FLAGS_rng)));
  const bool numpy = stream == data::SplitStream::kNumpy;
  if (numpy && scheme != "iid" && scheme != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rng numpy reproduces NIID-Bench's iid and dirichlet splits only, not --scheme ",
        scheme));
  }
  if (clients < 1) return absl::InvalidArgumentError("--clients must be ≥ 1");
  if (absl::GetFlag(FLAGS_train_examples) < 0) {
    return absl::InvalidArgumentError("--train-examples must be ≥ 0");
  }

  FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm, data::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  data::Dataset train = std::move(fm.train);
  if (const int n = absl::GetFlag(FLAGS_train_examples); n > 0 && n < train.num_examples) {
    std::vector<int> first(n);
    std::iota(first.begin(), first.end(), 0);
    train = data::Subset(train, first);
  }

  absl::StatusOr<data::ClientIndices> parts;
  if (scheme == "iid") {
    parts = data::IidFrom(stream, train.num_examples, clients, seed);
  } else if (scheme == "dirichlet") {
    parts = data::LabelDirichletFrom(stream, train.labels, train.num_classes, clients, alpha,
                                     seed);
  } else if (scheme == "kclasses") {
    parts = data::KClassesPerClient(train.labels, train.num_classes, clients, absl::GetFlag(FLAGS_k), seed);
  } else if (scheme == "quantity") {
    parts = data::QuantitySkew(train.num_examples, clients, alpha, seed);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--scheme must be iid, dirichlet, kclasses or quantity, got \"", scheme, "\""));
  }
  if (!parts.ok()) return parts.status();
  FEDGE_RETURN_IF_ERROR(data::WritePartition(out, train, *parts));
  for (const std::string& s : absl::GetFlag(FLAGS_label_flip)) {
    int c = -1;
    if (!absl::SimpleAtoi(s, &c) || c < 0 || c >= clients) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--label-flip takes device indices in [0, ", clients, "), got \"", s, "\""));
    }
    data::Dataset hostile = data::Subset(train, (*parts)[static_cast<size_t>(c)]);
    data::FlipLabels(hostile);
    FEDGE_RETURN_IF_ERROR(data::WriteShard(data::ShardPath(out, c), hostile));
    std::printf("partition_fmnist: device %d's shard has flipped labels (hostile)\n", c);
  }

  FEDGE_ASSIGN_OR_RETURN(std::vector<std::vector<int>> counts,
                         data::PartitionClassCounts(train.labels, train.num_classes, *parts));
  std::printf("%s", data::FormatClassCounts(counts).c_str());
  size_t smallest = train.num_examples, largest = 0, total = 0;
  for (const std::vector<int>& p : *parts) {
    smallest = std::min(smallest, p.size());
    largest = std::max(largest, p.size());
    total += p.size();
  }
  std::string params;
  if (scheme == "dirichlet" || scheme == "quantity") params = absl::StrCat(" alpha ", alpha);
  if (scheme == "kclasses") params = absl::StrCat(" k ", absl::GetFlag(FLAGS_k));
  std::printf("partition_fmnist: %s%s seed %llu%s: %zu of %d examples to %d clients "
              "(%zu to %zu each), shards in %s/\n",
              scheme.c_str(), params.c_str(), static_cast<unsigned long long>(seed),
              numpy ? " (numpy stream: NIID-Bench's split)" : "", total,
              train.num_examples, clients, smallest, largest, out.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Partitions Fashion-MNIST's training set into one shard file per device:\n"
      "  partition_fmnist --clients N --scheme {iid,dirichlet,kclasses,quantity} [--alpha 0.5]\n"
      "                   [--k 2] [--seed 0] [--rng fedge|numpy] [--train-examples N]\n"
      "                   [--label-flip I,J] --out DIR");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "partition_fmnist: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
