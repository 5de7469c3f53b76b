#include "data/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "data/numpy_random.h"

namespace fedge::data {
namespace {

absl::Status Invalid(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("Partition: ", msg));
}

absl::Status CheckClients(int num_examples, int num_clients) {
  if (num_clients <= 0) return Invalid(absl::StrCat("num_clients is ", num_clients));
  if (num_examples < 0) return Invalid(absl::StrCat("num_examples is ", num_examples));
  if (num_clients > num_examples) {
    return Invalid(absl::StrCat(num_clients, " clients but only ", num_examples, " examples"));
  }
  return absl::OkStatus();
}

absl::Status CheckAlpha(double alpha) {
  if (!(alpha > 0.0) || !std::isfinite(alpha)) {
    return Invalid(absl::StrCat("alpha is ", alpha, ", must be positive and finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckMinSize(int min_size, int num_examples, int num_clients) {
  if (min_size < 0) return Invalid(absl::StrCat("min_size is ", min_size));
  if (static_cast<int64_t>(min_size) * num_clients > num_examples) {
    return Invalid(absl::StrCat("min_size ", min_size, " × ", num_clients, " clients exceeds ",
                                num_examples, " examples"));
  }
  return absl::OkStatus();
}

// Example indices grouped by label, each group in ascending order.
absl::StatusOr<std::vector<std::vector<int>>> IndicesByClass(const std::vector<int32_t>& labels,
                                                             int num_classes) {
  if (num_classes <= 0) return Invalid(absl::StrCat("num_classes is ", num_classes));
  if (labels.size() > static_cast<size_t>(INT32_MAX)) {
    return Invalid(absl::StrCat(labels.size(), " labels is too many"));
  }
  std::vector<std::vector<int>> by_class(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return Invalid(absl::StrCat("label of example ", i, " is ", labels[i], ", outside [0, ",
                                  num_classes, ")"));
    }
    by_class[labels[i]].push_back(static_cast<int>(i));
  }
  return by_class;
}

// Appends v[begin, end) split as evenly as possible into `parts` pieces (numpy array_split:
// the first size % parts pieces get one extra) to out[targets[0]], out[targets[1]], ...
void ArraySplitInto(const std::vector<int>& v, const std::vector<int>& targets,
                    ClientIndices& out) {
  const size_t parts = targets.size();
  const size_t base = v.size() / parts, extra = v.size() % parts;
  size_t pos = 0;
  for (size_t j = 0; j < parts; ++j) {
    const size_t len = base + (j < extra ? 1 : 0);
    auto& dst = out[targets[j]];
    dst.insert(dst.end(), v.begin() + pos, v.begin() + pos + len);
    pos += len;
  }
}

// Cut points floor(cumsum(p) × n) for pieces 0..k-2 (numpy: (cumsum(p)*n).astype(int)[:-1]),
// clamped to [0, n]; piece j is [cut[j-1], cut[j]) with cut[-1] = 0 and cut[k-1] = n.
std::vector<size_t> CutPoints(const std::vector<double>& p, size_t n) {
  std::vector<size_t> cuts(p.size());
  double cum = 0.0;
  for (size_t j = 0; j + 1 < p.size(); ++j) {
    cum += p[j];
    const double c = std::floor(cum * static_cast<double>(n));
    cuts[j] = c <= 0.0 ? 0 : std::min(n, static_cast<size_t>(c));
  }
  cuts.back() = n;
  return cuts;
}

// numpy's sum of float64 a[0, n) (pairwise_sum: eight running sums up to its block of 128,
// halves above it), so that normalized proportions match the reference to the bit.
double NumpySum(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.0;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n > 128) {
    size_t half = n / 2;
    half -= half % 8;
    return NumpySum(a, half) + NumpySum(a + half, n - half);
  }
  double r[8];
  for (int j = 0; j < 8; ++j) r[j] = a[j];
  size_t i = 8;
  for (; i < n - n % 8; i += 8) {
    for (int j = 0; j < 8; ++j) r[j] += a[i + j];
  }
  double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += a[i];
  return res;
}

// LabelDirichlet's algorithm over either generator. With NumpyRandomState it follows the
// reference's arithmetic too (numpy's pairwise sum; no guard for an all-zero draw).
template <typename R>
absl::StatusOr<ClientIndices> LabelDirichletWith(R& rng, const std::vector<int32_t>& labels,
                                                 int num_classes, int num_clients, double alpha,
                                                 int min_size) {
  constexpr bool kNumpy = std::is_same_v<R, NumpyRandomState>;
  FEDGE_ASSIGN_OR_RETURN(std::vector<std::vector<int>> by_class,
                         IndicesByClass(labels, num_classes));
  const int n = static_cast<int>(labels.size());
  FEDGE_RETURN_IF_ERROR(CheckClients(n, num_clients));
  FEDGE_RETURN_IF_ERROR(CheckAlpha(alpha));
  FEDGE_RETURN_IF_ERROR(CheckMinSize(min_size, n, num_clients));

  const double cap = static_cast<double>(n) / num_clients;  // the reference's N / n_parties
  ClientIndices parts;
  size_t smallest = 0;
  for (int attempt = 0; attempt < kMaxPartitionAttempts; ++attempt) {
    parts.assign(num_clients, {});
    for (int k = 0; k < num_classes; ++k) {
      std::vector<int> idx = by_class[k];
      rng.Shuffle(idx);
      std::vector<double> p = rng.Dirichlet(alpha, num_clients);
      double sum = 0.0;
      for (int j = 0; j < num_clients; ++j) {
        if (!(static_cast<double>(parts[j].size()) < cap)) p[j] = 0.0;
        if constexpr (!kNumpy) sum += p[j];
      }
      if constexpr (kNumpy) sum = NumpySum(p.data(), p.size());
      if (sum > 0.0) {
        for (double& x : p) x /= sum;
      } else if constexpr (kNumpy) {
        return Invalid(absl::StrCat(
            "NIID-Bench's split is undefined here: every client below the balance cap drew 0 "
            "for class ", k, " (the reference divides by zero); use a larger alpha"));
      } else {
        // Every client under the cap drew 0 (tiny alpha): give the class to one of them.
        // One exists: the clients hold fewer than n examples before class k is placed.
        std::vector<int> open;
        for (int j = 0; j < num_clients; ++j) {
          if (static_cast<double>(parts[j].size()) < cap) open.push_back(j);
        }
        FEDGE_CHECK(!open.empty());
        p.assign(num_clients, 0.0);
        p[open[rng.UniformInt(open.size())]] = 1.0;
      }
      const std::vector<size_t> cuts = CutPoints(p, idx.size());
      size_t begin = 0;
      for (int j = 0; j < num_clients; ++j) {
        const size_t end = std::max(begin, cuts[j]);
        parts[j].insert(parts[j].end(), idx.begin() + begin, idx.begin() + end);
        begin = end;
      }
    }
    smallest = parts[0].size();
    for (const auto& part : parts) smallest = std::min(smallest, part.size());
    if (smallest >= static_cast<size_t>(min_size)) {
      for (auto& part : parts) rng.Shuffle(part);
      return parts;
    }
  }
  return Invalid(absl::StrCat(
      "LabelDirichlet gave up after ", kMaxPartitionAttempts, " draws: the smallest client got ",
      smallest, " examples, fewer than min_size ", min_size, " (alpha ", alpha, ", ", num_clients,
      " clients, ", n, " examples); use a larger alpha or a smaller min_size"));
}

// numpy.random.seed takes integers in [0, 2^32).
absl::Status CheckNumpySeed(uint64_t seed) {
  if (seed > 0xffffffffULL) {
    return Invalid(absl::StrCat("numpy's stream takes a seed in [0, 2^32), got ", seed));
  }
  return absl::OkStatus();
}

template <typename R>
absl::StatusOr<ClientIndices> IidWith(R& rng, int num_examples, int num_clients) {
  FEDGE_RETURN_IF_ERROR(CheckClients(num_examples, num_clients));
  std::vector<int> perm(num_examples);
  std::iota(perm.begin(), perm.end(), 0);
  rng.Shuffle(perm);
  ClientIndices parts(num_clients);
  std::vector<int> targets(num_clients);
  std::iota(targets.begin(), targets.end(), 0);
  ArraySplitInto(perm, targets, parts);
  return parts;
}

}  // namespace

absl::StatusOr<ClientIndices> Iid(int num_examples, int num_clients, uint64_t seed) {
  base::Rng rng(seed);
  return IidWith(rng, num_examples, num_clients);
}

absl::StatusOr<ClientIndices> LabelDirichlet(const std::vector<int32_t>& labels, int num_classes,
                                             int num_clients, double alpha, uint64_t seed,
                                             int min_size) {
  base::Rng rng(seed);
  return LabelDirichletWith(rng, labels, num_classes, num_clients, alpha, min_size);
}

absl::StatusOr<ClientIndices> NiidBenchIid(int num_examples, int num_clients, uint32_t seed) {
  NumpyRandomState rng(seed);
  return IidWith(rng, num_examples, num_clients);
}

absl::StatusOr<ClientIndices> NiidBenchLabelDirichlet(const std::vector<int32_t>& labels,
                                                      int num_classes, int num_clients,
                                                      double alpha, uint32_t seed, int min_size) {
  NumpyRandomState rng(seed);
  return LabelDirichletWith(rng, labels, num_classes, num_clients, alpha, min_size);
}

absl::StatusOr<SplitStream> ParseSplitStream(absl::string_view name) {
  if (name == "fedge") return SplitStream::kFedge;
  if (name == "numpy") return SplitStream::kNumpy;
  return Invalid(absl::StrCat("the split's random stream must be fedge or numpy, got \"", name,
                              "\""));
}

absl::StatusOr<ClientIndices> IidFrom(SplitStream stream, int num_examples, int num_clients,
                                      uint64_t seed) {
  if (stream == SplitStream::kFedge) return Iid(num_examples, num_clients, seed);
  FEDGE_RETURN_IF_ERROR(CheckNumpySeed(seed));
  return NiidBenchIid(num_examples, num_clients, static_cast<uint32_t>(seed));
}

absl::StatusOr<ClientIndices> LabelDirichletFrom(SplitStream stream,
                                                 const std::vector<int32_t>& labels,
                                                 int num_classes, int num_clients, double alpha,
                                                 uint64_t seed, int min_size) {
  if (stream == SplitStream::kFedge) {
    return LabelDirichlet(labels, num_classes, num_clients, alpha, seed, min_size);
  }
  FEDGE_RETURN_IF_ERROR(CheckNumpySeed(seed));
  return NiidBenchLabelDirichlet(labels, num_classes, num_clients, alpha,
                                 static_cast<uint32_t>(seed), min_size);
}

absl::StatusOr<ClientIndices> KClassesPerClient(const std::vector<int32_t>& labels, int num_classes,
                                                int num_clients, int k, uint64_t seed) {
  FEDGE_ASSIGN_OR_RETURN(std::vector<std::vector<int>> by_class,
                         IndicesByClass(labels, num_classes));
  FEDGE_RETURN_IF_ERROR(CheckClients(static_cast<int>(labels.size()), num_clients));
  if (k < 1 || k > num_classes) {
    return Invalid(absl::StrCat("k is ", k, ", outside [1, num_classes = ", num_classes, "]"));
  }
  base::Rng rng(seed);
  // holders[c]: the clients holding class c, in client order.
  std::vector<std::vector<int>> holders(num_classes);
  for (int i = 0; i < num_clients; ++i) {
    std::vector<int> held = {i % num_classes};
    while (static_cast<int>(held.size()) < k) {
      const int c = static_cast<int>(rng.UniformInt(num_classes));
      if (std::find(held.begin(), held.end(), c) == held.end()) held.push_back(c);
    }
    for (int c : held) holders[c].push_back(i);
  }
  ClientIndices parts(num_clients);
  for (int c = 0; c < num_classes; ++c) {
    std::vector<int> idx = by_class[c];
    rng.Shuffle(idx);
    if (!holders[c].empty()) ArraySplitInto(idx, holders[c], parts);
  }
  return parts;
}

absl::StatusOr<ClientIndices> QuantitySkew(int num_examples, int num_clients, double alpha,
                                           uint64_t seed, int min_size) {
  FEDGE_RETURN_IF_ERROR(CheckClients(num_examples, num_clients));
  FEDGE_RETURN_IF_ERROR(CheckAlpha(alpha));
  FEDGE_RETURN_IF_ERROR(CheckMinSize(min_size, num_examples, num_clients));
  base::Rng rng(seed);
  std::vector<int> perm(num_examples);
  std::iota(perm.begin(), perm.end(), 0);
  rng.Shuffle(perm);
  size_t smallest = 0;
  for (int attempt = 0; attempt < kMaxPartitionAttempts; ++attempt) {
    const std::vector<size_t> cuts = CutPoints(rng.Dirichlet(alpha, num_clients), perm.size());
    smallest = perm.size();
    size_t begin = 0;
    for (size_t cut : cuts) {
      smallest = std::min(smallest, std::max(begin, cut) - begin);
      begin = std::max(begin, cut);
    }
    if (smallest < static_cast<size_t>(min_size)) continue;
    ClientIndices parts(num_clients);
    begin = 0;
    for (int j = 0; j < num_clients; ++j) {
      const size_t end = std::max(begin, cuts[j]);
      parts[j].assign(perm.begin() + begin, perm.begin() + end);
      begin = end;
    }
    return parts;
  }
  return Invalid(absl::StrCat(
      "QuantitySkew gave up after ", kMaxPartitionAttempts, " draws: the smallest client got ",
      smallest, " examples, fewer than min_size ", min_size, " (alpha ", alpha, ", ", num_clients,
      " clients, ", num_examples, " examples); use a larger alpha or a smaller min_size"));
}

absl::Status ValidatePartition(const ClientIndices& parts, int num_examples) {
  std::vector<int> owner(static_cast<size_t>(std::max(num_examples, 0)), -1);
  for (size_t c = 0; c < parts.size(); ++c) {
    for (int i : parts[c]) {
      if (i < 0 || i >= num_examples) {
        return Invalid(
            absl::StrCat("client ", c, " holds example ", i, ", outside [0, ", num_examples, ")"));
      }
      if (owner[i] >= 0) {
        return Invalid(absl::StrCat("example ", i, " is held by client ", owner[i],
                                    " and again by client ", c));
      }
      owner[i] = static_cast<int>(c);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int>>> PartitionClassCounts(
    const std::vector<int32_t>& labels, int num_classes, const ClientIndices& parts) {
  if (num_classes <= 0) return Invalid(absl::StrCat("num_classes is ", num_classes));
  std::vector<std::vector<int>> counts(parts.size(), std::vector<int>(num_classes, 0));
  for (size_t c = 0; c < parts.size(); ++c) {
    for (int i : parts[c]) {
      if (i < 0 || static_cast<size_t>(i) >= labels.size()) {
        return Invalid(
            absl::StrCat("client ", c, " holds example ", i, ", outside [0, ", labels.size(), ")"));
      }
      const int32_t y = labels[i];
      if (y < 0 || y >= num_classes) {
        return Invalid(
            absl::StrCat("label of example ", i, " is ", y, ", outside [0, ", num_classes, ")"));
      }
      ++counts[c][y];
    }
  }
  return counts;
}

std::string FormatClassCounts(const std::vector<std::vector<int>>& counts) {
  size_t num_classes = 0;
  for (const auto& row : counts) num_classes = std::max(num_classes, row.size());
  std::string out = absl::StrFormat("%6s", "client");
  for (size_t k = 0; k < num_classes; ++k) absl::StrAppendFormat(&out, " %6d", k);
  absl::StrAppendFormat(&out, " %7s\n", "total");
  std::vector<int64_t> class_totals(num_classes, 0);
  int64_t grand = 0;
  for (size_t c = 0; c < counts.size(); ++c) {
    absl::StrAppendFormat(&out, "%6d", c);
    int64_t total = 0;
    for (size_t k = 0; k < num_classes; ++k) {
      const int v = k < counts[c].size() ? counts[c][k] : 0;
      absl::StrAppendFormat(&out, " %6d", v);
      total += v;
      class_totals[k] += v;
    }
    absl::StrAppendFormat(&out, " %7d\n", total);
    grand += total;
  }
  absl::StrAppendFormat(&out, "%6s", "total");
  for (int64_t t : class_totals) absl::StrAppendFormat(&out, " %6d", t);
  absl::StrAppendFormat(&out, " %7d\n", grand);
  return out;
}

}  // namespace fedge::data
