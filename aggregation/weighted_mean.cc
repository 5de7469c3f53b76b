#include "aggregation/weighted_mean.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <utility>

#include "aggregation/state_codec.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "kernels/accumulate.h"

namespace fedge::aggregation {
namespace {

using internal::StateReader;
using internal::StateWriter;

constexpr int64_t kTile = 8192;             // coordinates per tile (32 KB of the sum)
constexpr int64_t kMinShardSize = 1 << 16;  // smaller tensors are not split over threads
constexpr char kMagic[8] = {'F', 'E', 'D', 'G', 'E', 'W', 'M', '1'};
constexpr uint32_t kVersion = 1;       // float sums
constexpr uint32_t kExactVersion = 2;  // exact (fixed-point) sums

// One thread's share of one tensor: coordinates [begin, end); `done` is how far its tiles
// have been saved to the undo copy (and possibly changed).
struct Range {
  int slot;
  int64_t begin;
  int64_t end;
  int64_t done;
};



absl::Status Truncated() {
  return absl::DataLossError("WeightedMean: serialized state is truncated");
}

// trunc(p · 2^64) for |p| < 2^39, in two truncating conversions (no libm call):
// a = trunc(p · 2^24) (|a| < 2^63), then the rest r = p − a · 2^-24 (exact, |r| < 2^-24,
// the sign of a) gives b = trunc(r · 2^64) (|b| < 2^40); the value is a · 2^40 + b.
inline __int128 FixedPoint(double p) {
  const int64_t a = static_cast<int64_t>(p * 16777216.0);
  const double r = p - static_cast<double>(a) * (1.0 / 16777216.0);
  const int64_t b = static_cast<int64_t>(r * WeightedMean::kExactScale);
  return static_cast<__int128>(a) * (__int128{1} << 40) + b;  // no shift of a negative
}

// Exact sums: adds FixedPoint(w_t·v_t[i]) to fixed[i] for the held i in [lo, hi), and
// FixedPoint(w_t) to cover[i] for masked terms. False at the first product that is not
// finite or not below kExactMaxProduct (the tile is then restored by the caller).
bool FixedPointAccumulate(const kernels::AccumulateTerm* terms, int k, int64_t lo, int64_t hi,
                          __int128* fixed, __int128* cover) {
  for (int t = 0; t < k; ++t) {
    const double w = terms[t].weight;
    const __int128 w_fixed = FixedPoint(w);
    const float* v = terms[t].values;
    const uint64_t* held = terms[t].held;
    for (int64_t i = lo; i < hi; ++i) {
      if (held != nullptr && !((held[i >> 6] >> (i & 63)) & 1u)) continue;
      const double p = w * static_cast<double>(v[i]);  // exact: 24 × 24 bits
      if (!(std::fabs(p) < WeightedMean::kExactMaxProduct)) return false;
      fixed[i] += FixedPoint(p);
      if (held != nullptr) cover[i] += w_fixed;
    }
  }
  return true;
}

}  // namespace

WeightedMean::WeightedMean(std::vector<TensorSpec> specs, bool exact)
    : specs_(std::move(specs)), exact_(exact) {
  slots_.resize(specs_.size());
  for (size_t s = 0; s < specs_.size(); ++s) {
    index_[specs_[s].name] = static_cast<int>(s);
    const size_t size = static_cast<size_t>(specs_[s].size());
    // Allocated (and touched) here, not in the first Accumulate.
    if (exact_) {
      slots_[s].fixed.assign(size, 0);
      slots_[s].undo_fixed.assign(size, 0);
    } else {
      slots_[s].sum.assign(size, 0.0f);
      slots_[s].undo_sum.assign(size, 0.0f);
    }
  }
}

absl::StatusOr<std::unique_ptr<WeightedMean>> WeightedMean::Create(
    std::vector<TensorSpec> specs, WeightedMeanOptions options) {
  absl::flat_hash_map<std::string, int> seen;
  for (const TensorSpec& spec : specs) {
    if (spec.name.empty()) {
      return absl::InvalidArgumentError("WeightedMean: a tensor spec has an empty name");
    }
    if (!seen.emplace(spec.name, 0).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("WeightedMean: tensor ", spec.name, " is listed twice"));
    }
    int64_t size = 1;
    for (int64_t d : spec.shape) {
      if (d < 0 || (d > 0 && size > (int64_t{1} << 40) / d)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "WeightedMean: tensor ", spec.name, " has an impossible shape ",
            ShapeString(spec.shape)));
      }
      size *= d;
    }
  }
  return std::unique_ptr<WeightedMean>(new WeightedMean(std::move(specs), options.exact));
}

absl::Status WeightedMean::CheckStructure(const Update& update, int position,
                                          std::vector<int>* order) const {
  if (!(update.weight > 0.0) || !std::isfinite(update.weight) ||
      !std::isfinite(static_cast<float>(update.weight))) {
    return absl::InvalidArgumentError(
        absl::StrCat("WeightedMean: ", DescribeUpdate(update, position), " has weight ", update.weight,
                     "; expected a positive, finite example count"));
  }
  if (exact_ && !(static_cast<float>(update.weight) < kExactMaxProduct)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WeightedMean: ", DescribeUpdate(update, position), " has weight ", update.weight,
        ", past the 2^39 exact sums hold"));
  }
  order->assign(specs_.size(), -1);
  for (size_t t = 0; t < update.tensors.size(); ++t) {
    const Tensor& tensor = update.tensors[t];
    auto it = index_.find(tensor.name);
    if (it == index_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": unknown tensor ", tensor.name));
    }
    const int s = it->second;
    if ((*order)[s] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": tensor ", tensor.name, " appears twice"));
    }
    const TensorSpec& spec = specs_[s];
    if (tensor.shape != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": tensor ", tensor.name, " has shape ",
          ShapeString(tensor.shape), ", expected ", ShapeString(spec.shape)));
    }
    if (static_cast<int64_t>(tensor.values.size()) != spec.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": tensor ", tensor.name, " has ",
          tensor.values.size(), " values, its shape ", ShapeString(spec.shape), " needs ",
          spec.size()));
    }
    if (tensor.held.has_value() &&
        (tensor.held->size() != spec.size() ||
         tensor.held->words().size() != static_cast<size_t>((spec.size() + 63) / 64))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": tensor ", tensor.name,
          " has a held-coordinate mask over ", tensor.held->size(), " coordinates, expected ",
          spec.size()));
    }
    (*order)[s] = static_cast<int>(t);
  }
  for (size_t s = 0; s < specs_.size(); ++s) {
    if ((*order)[s] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", DescribeUpdate(update, position), ": missing tensor ", specs_[s].name));
    }
  }
  return absl::OkStatus();
}

absl::Status WeightedMean::FindNonFinite(const Update& update, int position) const {
  for (const Tensor& tensor : update.tensors) {
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      const bool held = !tensor.held.has_value() || tensor.held->held(static_cast<int64_t>(i));
      if (held && !std::isfinite(tensor.values[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "WeightedMean: ", DescribeUpdate(update, position), ": tensor ", tensor.name,
            " has a non-finite value (", tensor.values[i], ") at coordinate ", i));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WeightedMean::Validate(const Update& update, double* max_abs) const {
  double bound = 0.0;
  FEDGE_RETURN_IF_ERROR(ValidateBound(update, &bound));
  if (exact_ && !(static_cast<double>(static_cast<float>(update.weight)) * bound <
                  kExactMaxProduct)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WeightedMean: ", DescribeUpdate(update, -1), " has values up to ", bound,
        " with weight ", update.weight, ": a product reaches 2^39, past what exact sums hold"));
  }
  if (max_abs != nullptr) *max_abs = bound;
  return absl::OkStatus();
}

absl::Status WeightedMean::ValidateBound(const Update& update, double* max_abs) const {
  std::vector<int> order;
  FEDGE_RETURN_IF_ERROR(CheckStructure(update, -1, &order));
  if (update.max_abs.has_value() && *update.max_abs >= 0.0 && std::isfinite(*update.max_abs)) {
    *max_abs = *update.max_abs;  // its decoder read every value
    return absl::OkStatus();
  }
  double bound = 0.0;
  for (const Tensor& tensor : update.tensors) {
    const int64_t n = static_cast<int64_t>(tensor.values.size());
    const float m = kernels::MaxAbs(tensor.values.data(), 0, n);
    if (std::isfinite(m)) {
      // Over every coordinate: for a masked tensor, a bound on the held ones.
      bound = std::max<double>(bound, m);
      continue;
    }
    // A NaN/Inf somewhere: an error if a held coordinate has it, else the held ones' max.
    FEDGE_RETURN_IF_ERROR(FindNonFinite(update, -1));
    for (int64_t i = 0; i < n; ++i) {
      if (tensor.held->held(i)) bound = std::max<double>(bound, std::fabs(tensor.values[i]));
    }
  }
  *max_abs = bound;
  return absl::OkStatus();
}

absl::Status WeightedMean::Accumulate(const Update& update) {
  const Update* one[] = {&update};
  return AccumulateBatch(one, AccumulateOptions{});
}

absl::Status WeightedMean::AccumulateBatch(absl::Span<const Update* const> updates,
                                           const AccumulateOptions& options) {
  if (updates.empty()) return absl::OkStatus();
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("WeightedMean: AccumulateOptions.threads is ", options.threads,
                     "; expected at least 1"));
  }
  const int nb = static_cast<int>(updates.size());
  const bool lone = nb == 1;
  if (exact_ && num_updates_ + nb > kExactMaxUpdates) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "WeightedMean: exact sums hold at most ", kExactMaxUpdates, " updates"));
  }
  // 1. Structure (cheap): names, shapes, masks, weights.
  std::vector<std::vector<int>> order(nb);
  for (int b = 0; b < nb; ++b) {
    FEDGE_RETURN_IF_ERROR(CheckStructure(*updates[b], lone ? -1 : b, &order[b]));
  }
  // 2. Terms per tensor, in batch order; weight-sum arrays where masks appear.
  const size_t ns = specs_.size();
  std::vector<std::vector<kernels::AccumulateTerm>> terms(ns);
  for (size_t s = 0; s < ns; ++s) {
    Slot& slot = slots_[s];
    const size_t size = static_cast<size_t>(specs_[s].size());
    bool masked = false;
    for (int b = 0; b < nb; ++b) {
      const Tensor& t = updates[b]->tensors[order[b][s]];
      kernels::AccumulateTerm term;
      term.values = t.values.data();
      term.held = t.held.has_value() ? t.held->words().data() : nullptr;
      term.weight = static_cast<float>(updates[b]->weight);
      masked |= term.held != nullptr;
      terms[s].push_back(term);
    }
    // Allocating a zero weight sum does not change the state's meaning (and is kept if the
    // batch is rejected).
    if (exact_) {
      if (masked && slot.fixed_cover.empty()) slot.fixed_cover.assign(size, 0);
      if (slot.undo_fixed.size() != size) slot.undo_fixed.resize(size);
      if (!slot.fixed_cover.empty() && slot.undo_fixed_cover.size() != size) {
        slot.undo_fixed_cover.resize(size);
      }
    } else {
      if (masked && slot.cover.empty()) slot.cover.assign(size, 0.0f);
      if (slot.undo_sum.size() != size) slot.undo_sum.resize(size);
    }
    if (!slot.cover.empty() && slot.undo_cover.size() != size) slot.undo_cover.resize(size);
  }
  // 3. Ranges per thread: big tensors split in `threads` 64-aligned parts, small ones whole
  // on the calling thread.
  const int nt = options.threads;
  std::vector<std::vector<Range>> ranges(nt);
  for (size_t s = 0; s < ns; ++s) {
    const int64_t size = specs_[s].size();
    if (size == 0) continue;
    if (nt == 1 || size < kMinShardSize) {
      ranges[0].push_back({static_cast<int>(s), 0, size, 0});
      continue;
    }
    for (int t = 0; t < nt; ++t) {
      const int64_t lo = t == 0 ? 0 : (size * t / nt) & ~int64_t{63};
      const int64_t hi = t == nt - 1 ? size : (size * (t + 1) / nt) & ~int64_t{63};
      if (hi > lo) ranges[t].push_back({static_cast<int>(s), lo, hi, lo});
    }
  }
  for (auto& rs : ranges) {
    for (Range& r : rs) r.done = r.begin;
  }
  // 4. Check and add, tile by tile, stopping everywhere at the first non-finite value.
  std::atomic<bool> failed{false};
  auto work = [&](int t) {
    for (Range& r : ranges[t]) {
      Slot& slot = slots_[r.slot];
      const std::vector<kernels::AccumulateTerm>& ts = terms[r.slot];
      float* cover = slot.cover.empty() ? nullptr : slot.cover.data();
      for (int64_t lo = r.begin; lo < r.end; lo += kTile) {
        if (failed.load(std::memory_order_relaxed)) return;
        const int64_t hi = std::min(r.end, lo + kTile);
        if (exact_) {
          __int128* fixed_cover = slot.fixed_cover.empty() ? nullptr : slot.fixed_cover.data();
          if (!slot.zero) {
            const size_t n = static_cast<size_t>(hi - lo);
            std::copy_n(slot.fixed.data() + lo, n, slot.undo_fixed.data() + lo);
            if (fixed_cover != nullptr) {
              std::copy_n(fixed_cover + lo, n, slot.undo_fixed_cover.data() + lo);
            }
          }
          r.done = hi;
          if (!FixedPointAccumulate(ts.data(), nb, lo, hi, slot.fixed.data(), fixed_cover)) {
            failed.store(true, std::memory_order_relaxed);
            return;
          }
          continue;
        }
        const size_t bytes = static_cast<size_t>(hi - lo) * sizeof(float);
        if (!slot.zero) {
          std::memcpy(slot.undo_sum.data() + lo, slot.sum.data() + lo, bytes);
          if (cover != nullptr) std::memcpy(slot.undo_cover.data() + lo, cover + lo, bytes);
        }
        r.done = hi;
        for (int g = 0; g < nb; g += kernels::kMaxAccumulateTerms) {
          const int k = std::min(nb - g, kernels::kMaxAccumulateTerms);
          if (g == 0 && slot.zero) {  // an empty sum: written, not read (nor saved)
            kernels::WeightedSum(&ts[g], k, lo, hi, slot.sum.data(), cover);
          } else {
            kernels::WeightedAccumulate(&ts[g], k, lo, hi, slot.sum.data(), cover);
          }
        }
        // The finite check, on the sum while its tile is in cache: w·u is NaN/Inf for a
        // NaN/Inf u (w is positive and finite), and nothing finite added to NaN/Inf makes
        // it finite again, so a finite tile proves every added value was finite. (A finite
        // sum overflowing to Inf is caught too.)
        if (!kernels::AllFinite(slot.sum.data(), lo, hi)) {
          failed.store(true, std::memory_order_relaxed);
          return;
        }
      }
    }
  };
  {
    std::vector<std::thread> threads;
    for (int t = 1; t < nt; ++t) threads.emplace_back(work, t);
    work(0);
    for (std::thread& th : threads) th.join();
  }
  if (failed.load()) {
    // Restore every tile touched, then name the first bad update (batch order).
    for (const auto& rs : ranges) {
      for (const Range& r : rs) {
        Slot& slot = slots_[r.slot];
        const size_t bytes = static_cast<size_t>(r.done - r.begin) * sizeof(float);
        if (exact_) {
          const size_t n = static_cast<size_t>(r.done - r.begin);
          if (slot.zero) {
            std::fill_n(slot.fixed.data() + r.begin, n, __int128{0});
            if (!slot.fixed_cover.empty()) {
              std::fill_n(slot.fixed_cover.data() + r.begin, n, __int128{0});
            }
          } else {
            std::copy_n(slot.undo_fixed.data() + r.begin, n, slot.fixed.data() + r.begin);
            if (!slot.fixed_cover.empty()) {
              std::copy_n(slot.undo_fixed_cover.data() + r.begin, n,
                          slot.fixed_cover.data() + r.begin);
            }
          }
          continue;
        }
        if (slot.zero) {
          std::memset(slot.sum.data() + r.begin, 0, bytes);
          if (!slot.cover.empty()) std::memset(slot.cover.data() + r.begin, 0, bytes);
          continue;
        }
        std::memcpy(slot.sum.data() + r.begin, slot.undo_sum.data() + r.begin, bytes);
        if (!slot.cover.empty()) {
          std::memcpy(slot.cover.data() + r.begin, slot.undo_cover.data() + r.begin, bytes);
        }
      }
    }
    for (int b = 0; b < nb; ++b) {
      FEDGE_RETURN_IF_ERROR(FindNonFinite(*updates[b], lone ? -1 : b));
    }
    if (exact_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: ", lone ? DescribeUpdate(*updates[0], -1) : "batch",
          ": a value times its weight reaches 2^39, past what exact sums hold"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "WeightedMean: ", lone ? DescribeUpdate(*updates[0], -1) : "batch",
        ": the weighted sum overflows float (values too large for their weights)"));
  }
  // 5. Weights and counters.
  for (size_t s = 0; s < ns; ++s) {
    slots_[s].zero = false;
    for (const kernels::AccumulateTerm& term : terms[s]) {
      if (term.held != nullptr) continue;
      if (exact_) {
        slots_[s].fixed_dense += FixedPoint(term.weight);
      } else {
        slots_[s].dense_weight += term.weight;
      }
    }
  }
  for (int b = 0; b < nb; ++b) {
    const float w = static_cast<float>(updates[b]->weight);
    if (exact_) {
      fixed_total_ += FixedPoint(w);
    } else {
      total_weight_ += w;
    }
  }
  if (exact_) total_weight_ = static_cast<double>(fixed_total_) / kExactScale;
  num_updates_ += nb;
  return absl::OkStatus();
}

absl::StatusOr<double> WeightedMean::CheckForeignState() const {
  if (!(total_weight_ >= 0) || !std::isfinite(total_weight_)) {
    return absl::InvalidArgumentError("WeightedMean: the state's total weight is not finite");
  }
  if (exact_) return 0.0;
  double largest = 0;
  for (size_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    bool finite = std::isfinite(slot.dense_weight) && slot.dense_weight >= 0;
    for (float v : slot.sum) {
      finite = finite && std::isfinite(v);
      largest = std::max(largest, static_cast<double>(std::fabs(v)));
    }
    for (float c : slot.cover) finite = finite && std::isfinite(c) && c >= 0;
    if (!finite) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: the state of tensor ", specs_[s].name,
          " has a non-finite sum or a negative or non-finite weight"));
    }
  }
  return largest;
}

absl::Status WeightedMean::MergeWith(Aggregator&& other) {
  auto* o = dynamic_cast<WeightedMean*>(&other);
  if (o == nullptr) {
    return absl::InvalidArgumentError("WeightedMean: can only merge another WeightedMean");
  }
  if (o == this) return absl::InvalidArgumentError("WeightedMean: cannot merge with itself");
  if (o->specs_ != specs_) {
    return absl::InvalidArgumentError(
        "WeightedMean: cannot merge aggregates over different tensor specs");
  }
  if (o->exact_ != exact_) {
    return absl::InvalidArgumentError(
        "WeightedMean: cannot merge exact sums with float sums");
  }
  if (exact_ && num_updates_ + o->num_updates_ > kExactMaxUpdates) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "WeightedMean: exact sums hold at most ", kExactMaxUpdates, " updates"));
  }
  for (size_t s = 0; s < slots_.size(); ++s) {
    Slot& mine = slots_[s];
    Slot& theirs = o->slots_[s];
    const int64_t size = specs_[s].size();
    if (size == 0) continue;
    if (exact_) {
      for (int64_t i = 0; i < size; ++i) mine.fixed[i] += theirs.fixed[i];
      if (!theirs.fixed_cover.empty()) {
        if (mine.fixed_cover.empty()) mine.fixed_cover.assign(size, 0);
        for (int64_t i = 0; i < size; ++i) mine.fixed_cover[i] += theirs.fixed_cover[i];
      }
      mine.fixed_dense += theirs.fixed_dense;
      mine.zero = mine.zero && theirs.zero;
      continue;
    }
    {
      // sum += 1 · other.sum (1·x is exact, so this is a plain elementwise add).
      const kernels::AccumulateTerm add_sum{theirs.sum.data(), nullptr, 1.0f};
      kernels::WeightedAccumulate(&add_sum, 1, 0, size, mine.sum.data(), nullptr);
    }
    if (!theirs.cover.empty()) {
      if (mine.cover.empty()) mine.cover.assign(size, 0.0f);
      const kernels::AccumulateTerm add_cover{theirs.cover.data(), nullptr, 1.0f};
      kernels::WeightedAccumulate(&add_cover, 1, 0, size, mine.cover.data(), nullptr);
    }
    mine.dense_weight += theirs.dense_weight;
    mine.zero = mine.zero && theirs.zero;
  }
  num_updates_ += o->num_updates_;
  if (exact_) {
    fixed_total_ += o->fixed_total_;
    total_weight_ = static_cast<double>(fixed_total_) / kExactScale;
  } else {
    total_weight_ += o->total_weight_;
  }
  // Leave `other` empty: its state now lives here.
  o->fixed_total_ = 0;
  for (Slot& slot : o->slots_) {
    std::fill(slot.sum.begin(), slot.sum.end(), 0.0f);
    std::fill(slot.fixed.begin(), slot.fixed.end(), __int128{0});
    slot.fixed_cover.clear();
    slot.fixed_dense = 0;
    slot.cover.clear();
    slot.dense_weight = 0.0;
    slot.zero = true;
  }
  o->num_updates_ = 0;
  o->total_weight_ = 0.0;
  return absl::OkStatus();
}

absl::StatusOr<ModelDelta> WeightedMean::Report() && {
  if (num_updates_ == 0) {
    return absl::FailedPreconditionError(
        "WeightedMean: Report with no accumulated updates (the round has no survivors)");
  }
  ModelDelta delta;
  delta.total_weight = total_weight_;
  delta.num_updates = num_updates_;
  delta.tensors.reserve(specs_.size());
  for (size_t s = 0; s < specs_.size(); ++s) {
    Slot& slot = slots_[s];
    Tensor out;
    out.name = specs_[s].name;
    out.shape = specs_[s].shape;
    const int64_t size = specs_[s].size();
    if (exact_) {
      // Each mean from the exact sum and the exact weight: two roundings to double, one
      // division, one rounding to float; nothing depends on the order of the updates.
      out.values.assign(static_cast<size_t>(size), 0.0f);
      const bool masked = !slot.fixed_cover.empty();
      std::optional<CoordinateMask> held;
      if (slot.fixed_dense <= 0) held.emplace(size);
      for (int64_t i = 0; i < size; ++i) {
        const __int128 w = slot.fixed_dense + (masked ? slot.fixed_cover[i] : 0);
        if (w <= 0) continue;
        out.values[i] =
            static_cast<float>(static_cast<double>(slot.fixed[i]) / static_cast<double>(w));
        if (held.has_value()) held->Set(i);
      }
      out.held = std::move(held);
      std::vector<__int128>().swap(slot.fixed);
      std::vector<__int128>().swap(slot.fixed_cover);
      delta.tensors.push_back(std::move(out));
      continue;
    }
    out.values = std::move(slot.sum);  // divided in place
    float* v = out.values.data();
    if (slot.cover.empty()) {
      if (slot.dense_weight > 0.0) {
        const double w = slot.dense_weight;
        for (int64_t i = 0; i < size; ++i) v[i] = static_cast<float>(v[i] / w);
      } else {
        out.held = CoordinateMask(size);  // nobody held anything (cannot happen today)
      }
    } else {
      const double dw = slot.dense_weight;
      const float* c = slot.cover.data();
      for (int64_t i = 0; i < size; ++i) {
        const double w = dw + c[i];
        v[i] = w > 0.0 ? static_cast<float>(v[i] / w) : 0.0f;
      }
      if (dw <= 0.0) {
        CoordinateMask held(size);
        for (int64_t i = 0; i < size; ++i) {
          if (c[i] > 0.0f) held.Set(i);
        }
        out.held = std::move(held);
      }
    }
    delta.tensors.push_back(std::move(out));
  }
  slots_.clear();
  num_updates_ = 0;
  return delta;
}

absl::StatusOr<std::string> WeightedMean::Serialize() const {
  StateWriter w;
  w.PutBytes(kMagic, sizeof(kMagic));
  w.Put<uint32_t>(exact_ ? kExactVersion : kVersion);
  w.Put<int64_t>(num_updates_);
  w.Put<double>(total_weight_);
  if (exact_) w.PutBytes(&fixed_total_, sizeof(__int128));
  w.Put<uint32_t>(static_cast<uint32_t>(specs_.size()));
  for (size_t s = 0; s < specs_.size(); ++s) {
    const TensorSpec& spec = specs_[s];
    const Slot& slot = slots_[s];
    w.Put<uint32_t>(static_cast<uint32_t>(spec.name.size()));
    w.PutBytes(spec.name.data(), spec.name.size());
    w.Put<uint32_t>(static_cast<uint32_t>(spec.shape.size()));
    for (int64_t d : spec.shape) w.Put<int64_t>(d);
    if (exact_) {
      w.PutBytes(&slot.fixed_dense, sizeof(__int128));
      w.Put<uint8_t>(slot.fixed_cover.empty() ? 0 : 1);
      w.PutBytes(slot.fixed.data(), slot.fixed.size() * sizeof(__int128));
      if (!slot.fixed_cover.empty()) {
        w.PutBytes(slot.fixed_cover.data(), slot.fixed_cover.size() * sizeof(__int128));
      }
      continue;
    }
    w.Put<double>(slot.dense_weight);
    w.Put<uint8_t>(slot.cover.empty() ? 0 : 1);
    w.PutBytes(slot.sum.data(), slot.sum.size() * sizeof(float));
    if (!slot.cover.empty()) w.PutBytes(slot.cover.data(), slot.cover.size() * sizeof(float));
  }
  return w.Finish();
}

absl::StatusOr<std::unique_ptr<WeightedMean>> WeightedMean::Deserialize(
    absl::string_view state) {
  if (state.size() < sizeof(kMagic) + sizeof(uint32_t) ||
      std::memcmp(state.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("WeightedMean: serialized state has no FEDGEWM1 header");
  }
  const absl::string_view body = state.substr(0, state.size() - sizeof(uint32_t));
  uint32_t want_crc;
  std::memcpy(&want_crc, state.data() + body.size(), sizeof(want_crc));
  const uint32_t crc = static_cast<uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(body.data()), body.size()));
  if (crc != want_crc) {
    return absl::DataLossError("WeightedMean: serialized state fails its CRC-32 check");
  }
  StateReader r(body.substr(sizeof(kMagic)));
  uint32_t version, num_tensors;
  int64_t num_updates;
  double total_weight;
  if (!r.Get(&version)) return Truncated();
  if (version != kVersion && version != kExactVersion) {
    return absl::DataLossError(
        absl::StrCat("WeightedMean: serialized state has version ", version, ", expected ",
                     kVersion, " or ", kExactVersion));
  }
  const bool exact = version == kExactVersion;
  const size_t sum_bytes = exact ? sizeof(__int128) : sizeof(float);
  __int128 fixed_total = 0;
  if (!r.Get(&num_updates) || !r.Get(&total_weight) ||
      (exact && !r.GetBytes(&fixed_total, sizeof(fixed_total))) || !r.Get(&num_tensors)) {
    return Truncated();
  }
  // Each tensor needs at least its fixed-size header, so a huge count is a truncation.
  if (num_tensors > r.remaining() / 17) return Truncated();
  std::vector<TensorSpec> specs;
  std::vector<double> dense(num_tensors);
  struct Loaded {
    std::vector<float> sum, cover;
    std::vector<__int128> fixed, fixed_cover;
    __int128 fixed_dense = 0;
  };
  std::vector<Loaded> loaded(num_tensors);
  for (uint32_t s = 0; s < num_tensors; ++s) {
    TensorSpec spec;
    uint32_t name_len, rank;
    if (!r.Get(&name_len) || name_len > r.remaining()) return Truncated();
    spec.name.resize(name_len);
    if (!r.GetBytes(spec.name.data(), name_len) || !r.Get(&rank)) return Truncated();
    if (rank > 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WeightedMean: serialized tensor ", spec.name, " has rank ", rank));
    }
    spec.shape.resize(rank);
    for (uint32_t d = 0; d < rank; ++d) {
      if (!r.Get(&spec.shape[d])) return Truncated();
    }
    uint8_t has_cover;
    if (exact ? !r.GetBytes(&loaded[s].fixed_dense, sizeof(__int128)) : !r.Get(&dense[s])) {
      return Truncated();
    }
    if (!r.Get(&has_cover)) return Truncated();
    int64_t size = 1;
    for (int64_t d : spec.shape) {
      if (d < 0 || (d > 0 && size > static_cast<int64_t>(r.remaining()) / d)) {
        return Truncated();
      }
      size *= d;
    }
    if (static_cast<size_t>(size) * sum_bytes * (has_cover ? 2 : 1) > r.remaining()) {
      return Truncated();
    }
    if (exact) {
      loaded[s].fixed.resize(static_cast<size_t>(size));
      r.GetBytes(loaded[s].fixed.data(), loaded[s].fixed.size() * sizeof(__int128));
    } else {
      loaded[s].sum.resize(static_cast<size_t>(size));
      r.GetBytes(loaded[s].sum.data(), loaded[s].sum.size() * sizeof(float));
    }
    if (has_cover && exact) {
      loaded[s].fixed_cover.resize(static_cast<size_t>(size));
      r.GetBytes(loaded[s].fixed_cover.data(), loaded[s].fixed_cover.size() * sizeof(__int128));
    } else if (has_cover) {
      loaded[s].cover.resize(static_cast<size_t>(size));
      r.GetBytes(loaded[s].cover.data(), loaded[s].cover.size() * sizeof(float));
    }
    specs.push_back(std::move(spec));
  }
  if (r.remaining() != 0) {
    return absl::DataLossError("WeightedMean: serialized state has trailing bytes");
  }
  if (num_updates < 0 || !(total_weight >= 0.0)) {
    return absl::InvalidArgumentError("WeightedMean: serialized counters are negative");
  }
  if (exact) {
    // Each update adds less than 2^103 to a coordinate: a larger sum is no state this code
    // wrote, and merging it could overflow.
    if (num_updates > kExactMaxUpdates) {
      return absl::InvalidArgumentError("WeightedMean: serialized exact sums hold too many updates");
    }
    // (and weights likewise, never negative): a state of no update holds only zeros.
    const __int128 bound = static_cast<__int128>(num_updates) * (__int128{1} << 103);
    auto in_range = [&](__int128 f, bool weight) {
      return f <= bound && f >= (weight ? 0 : -bound) && (f != bound || bound == 0);
    };
    bool ok = in_range(fixed_total, true);
    for (const Loaded& l : loaded) {
      ok = ok && in_range(l.fixed_dense, true);
      for (__int128 f : l.fixed) ok = ok && in_range(f, false);
      for (__int128 f : l.fixed_cover) ok = ok && in_range(f, true);
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          "WeightedMean: a serialized exact sum exceeds what its updates could add");
    }
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<WeightedMean> agg,
                         Create(std::move(specs), WeightedMeanOptions{exact}));
  for (uint32_t s = 0; s < num_tensors; ++s) {
    if (exact) {
      agg->slots_[s].fixed = std::move(loaded[s].fixed);
      agg->slots_[s].fixed_cover = std::move(loaded[s].fixed_cover);
      agg->slots_[s].fixed_dense = loaded[s].fixed_dense;
    } else {
      agg->slots_[s].sum = std::move(loaded[s].sum);
    }
    agg->slots_[s].cover = std::move(loaded[s].cover);
    agg->slots_[s].dense_weight = dense[s];
    agg->slots_[s].zero = false;  // whatever it holds, it is read from now on
  }
  agg->num_updates_ = num_updates;
  agg->total_weight_ = exact ? static_cast<double>(fixed_total) / kExactScale : total_weight;
  agg->fixed_total_ = fixed_total;
  return agg;
}

}  // namespace fedge::aggregation
