#include "aggregation/update.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::aggregation {

int64_t TensorSpec::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

CoordinateMask::CoordinateMask(int64_t size, bool all_held)
    : size_(size), words_(static_cast<size_t>((size + 63) / 64), all_held ? ~uint64_t{0} : 0) {
  if (all_held && (size & 63) != 0) words_.back() = (uint64_t{1} << (size & 63)) - 1;
}

absl::StatusOr<CoordinateMask> CoordinateMask::Prefix(absl::Span<const int64_t> shape,
                                                      absl::Span<const int64_t> held) {
  if (shape.size() != held.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CoordinateMask: prefix [", absl::StrJoin(held, ","), "] has rank ", held.size(),
        ", tensor shape [", absl::StrJoin(shape, ","), "] has rank ", shape.size()));
  }
  int64_t size = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (held[d] < 0 || held[d] > shape[d]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CoordinateMask: prefix [", absl::StrJoin(held, ","), "] exceeds shape [",
          absl::StrJoin(shape, ","), "] in dimension ", d));
    }
    size *= shape[d];
  }
  CoordinateMask mask(size);
  if (size == 0) return mask;
  // Walk the held box with an odometer over all dimensions but the last; the last dimension
  // is a contiguous run of held[last] coordinates.
  const size_t rank = shape.size();
  if (rank == 0) {
    mask.Set(0);
    return mask;
  }
  for (int64_t h : held) {
    if (h == 0) return mask;
  }
  std::vector<int64_t> idx(rank, 0);
  while (true) {
    int64_t base = 0;
    for (size_t d = 0; d + 1 < rank; ++d) base = base * shape[d] + idx[d];
    base *= shape[rank - 1];
    for (int64_t j = 0; j < held[rank - 1]; ++j) mask.Set(base + j);
    int d = static_cast<int>(rank) - 2;
    while (d >= 0 && ++idx[d] == held[d]) idx[d--] = 0;
    if (d < 0) break;
  }
  return mask;
}

absl::StatusOr<CoordinateMask> CoordinateMask::FromIndices(int64_t size,
                                                           absl::Span<const int64_t> indices) {
  CoordinateMask mask(size);
  for (int64_t i : indices) {
    if (i < 0 || i >= size) {
      return absl::InvalidArgumentError(absl::StrCat("CoordinateMask: index ", i,
                                                     " is outside [0, ", size, ")"));
    }
    mask.Set(i);
  }
  return mask;
}

absl::StatusOr<CoordinateMask> CoordinateMask::FromWords(int64_t size,
                                                         std::vector<uint64_t> words) {
  if (size < 0 || words.size() != static_cast<size_t>((size + 63) / 64)) {
    return absl::InvalidArgumentError(absl::StrCat("CoordinateMask: ", words.size(),
                                                   " words cannot hold ", size,
                                                   " coordinates"));
  }
  if ((size & 63) != 0 && (words.back() >> (size & 63)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CoordinateMask: bits set past coordinate ", size));
  }
  CoordinateMask mask;
  mask.size_ = size;
  mask.words_ = std::move(words);
  return mask;
}

int64_t CoordinateMask::CountHeld() const {
  int64_t n = 0;
  for (uint64_t w : words_) n += __builtin_popcountll(w);
  return n;
}

std::vector<TensorSpec> SpecsOf(const std::vector<Tensor>& tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const Tensor& t : tensors) specs.push_back({t.name, t.shape});
  return specs;
}

double L2Norm(const Update& update) {
  double sq = 0;
  for (const Tensor& t : update.tensors) {
    for (float v : t.values) sq += static_cast<double>(v) * v;
  }
  return std::sqrt(sq);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string DescribeUpdate(const Update& u, int position) {
  const std::string client = u.client_id.empty() ? "(no client id)" : u.client_id;
  if (position < 0) return absl::StrCat("update from client ", client);
  return absl::StrCat("update ", position, " of the batch (client ", client, ")");
}

}  // namespace fedge::aggregation
