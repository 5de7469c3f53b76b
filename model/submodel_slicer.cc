#include "model/submodel_slicer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/rng.h"
#include "base/status_macros.h"

namespace fedge::model {
namespace {

constexpr int kMaxDim = 1 << 20;
constexpr int kMaxSpecLayers = 256;
constexpr int64_t kMaxSpecParameters = int64_t{1} << 28;
constexpr int64_t kMaxSpecActivations = int64_t{1} << 24;

bool Positive(int v) { return v > 0 && v <= kMaxDim; }

std::string ShapeString(const std::vector<int>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

absl::Status Invalid(const std::string& layer, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("SubModelSlicer: layer '", layer, "': ", what));
}

int64_t Product(const std::vector<int>& s) {
  int64_t n = 1;
  for (int d : s) n *= d;
  return n;
}

// One layer of a spec with its per-example input and output shapes.
struct LayerShape {
  const v1::LayerSpec* spec;
  std::string name;  // filled in as Sequential does
  std::vector<int> in, out;
};

// The shapes of every layer, with the checks of Sequential::Create (model/sequential.cc)
// that decide them.
absl::StatusOr<std::vector<LayerShape>> WalkSpec(const v1::ModelSpec& spec) {
  if (spec.layers_size() == 0) return absl::InvalidArgumentError("SubModelSlicer: no layers");
  if (spec.layers_size() > kMaxSpecLayers) {
    return absl::InvalidArgumentError(absl::StrCat("SubModelSlicer: ", spec.layers_size(),
                                                   " layers, at most ", kMaxSpecLayers));
  }
  if (spec.input_shape_size() < 1 || spec.input_shape_size() > 3) {
    return absl::InvalidArgumentError("SubModelSlicer: input_shape must have 1 to 3 dimensions");
  }
  std::vector<int> shape(spec.input_shape().begin(), spec.input_shape().end());
  for (int d : shape) {
    if (!Positive(d)) {
      return absl::InvalidArgumentError(absl::StrCat("SubModelSlicer: input_shape ",
                                                     ShapeString(shape), " has a bad dimension"));
    }
  }
  if (Product(shape) > kMaxSpecActivations) {
    return absl::InvalidArgumentError("SubModelSlicer: input too large");
  }
  std::vector<LayerShape> out;
  int64_t total_params = 0;
  for (int i = 0; i < spec.layers_size(); ++i) {
    const v1::LayerSpec& ls = spec.layers(i);
    LayerShape l{&ls, ls.name().empty() ? absl::StrCat("layer", i) : ls.name(), shape, {}};
    for (const LayerShape& prev : out) {
      if (prev.name == l.name) return Invalid(l.name, "duplicate layer name");
    }
    const std::vector<int>& in = l.in;
    switch (ls.kind_case()) {
      case v1::LayerSpec::kDense: {
        const auto& d = ls.dense();
        if (!Positive(d.in_features()) || !Positive(d.out_features())) {
          return Invalid(l.name, "dense in_features and out_features must be in [1, 2^20]");
        }
        if (in.size() != 1 || in[0] != d.in_features()) {
          return Invalid(l.name, absl::StrCat("dense expects input [", d.in_features(),
                                              "], got ", ShapeString(in)));
        }
        total_params += int64_t{d.in_features()} * d.out_features();
        l.out = {d.out_features()};
        break;
      }
      case v1::LayerSpec::kConv2D: {
        const auto& c = ls.conv2d();
        const int stride = c.stride() == 0 ? 1 : c.stride();
        if (in.size() != 3) {
          return Invalid(l.name, absl::StrCat("conv2d expects input [H, W, C], got ",
                                              ShapeString(in)));
        }
        if (!Positive(c.in_channels()) || !Positive(c.out_channels()) ||
            !Positive(c.kernel_size()) || !Positive(stride) || c.padding() < 0 ||
            c.padding() > 64) {
          return Invalid(l.name, "conv2d channels, kernel_size and stride must be positive, "
                                 "padding in [0, 64]");
        }
        if (in[2] != c.in_channels()) {
          return Invalid(l.name, absl::StrCat("conv2d in_channels ", c.in_channels(),
                                              " but input has ", in[2], " channels"));
        }
        if (c.kernel_size() > in[0] + 2 * c.padding() ||
            c.kernel_size() > in[1] + 2 * c.padding()) {
          return Invalid(l.name, "conv2d kernel larger than the padded input");
        }
        total_params += int64_t{c.in_channels()} * c.out_channels() * c.kernel_size() *
                        c.kernel_size();
        l.out = {(in[0] + 2 * c.padding() - c.kernel_size()) / stride + 1,
                 (in[1] + 2 * c.padding() - c.kernel_size()) / stride + 1, c.out_channels()};
        break;
      }
      case v1::LayerSpec::kMaxPool2D: {
        const auto& p = ls.max_pool2d();
        const int stride = p.stride() == 0 ? p.kernel_size() : p.stride();
        if (in.size() != 3) {
          return Invalid(l.name, absl::StrCat("max_pool2d expects input [H, W, C], got ",
                                              ShapeString(in)));
        }
        if (!Positive(p.kernel_size()) || !Positive(stride) || p.kernel_size() > in[0] ||
            p.kernel_size() > in[1]) {
          return Invalid(l.name, "max_pool2d kernel_size must be in [1, input size], stride > 0");
        }
        l.out = {(in[0] - p.kernel_size()) / stride + 1, (in[1] - p.kernel_size()) / stride + 1,
                 in[2]};
        break;
      }
      case v1::LayerSpec::kAvgPool2D: {
        const auto& p = ls.avg_pool2d();
        const int stride = p.stride() == 0 ? p.kernel_size() : p.stride();
        if (in.size() != 3) {
          return Invalid(l.name, absl::StrCat("avg_pool2d expects input [H, W, C], got ",
                                              ShapeString(in)));
        }
        if (!Positive(p.kernel_size()) || !Positive(stride) || p.kernel_size() > in[0] ||
            p.kernel_size() > in[1]) {
          return Invalid(l.name, "avg_pool2d kernel_size must be in [1, input size], stride > 0");
        }
        l.out = {(in[0] - p.kernel_size()) / stride + 1, (in[1] - p.kernel_size()) / stride + 1,
                 in[2]};
        break;
      }
      case v1::LayerSpec::kScaler: {
        const float rate = ls.scaler().rate();
        if (!std::isfinite(rate) || !(rate > 0.0f) || rate > 1.0f) {
          return Invalid(l.name, absl::StrCat("scaler rate must be in (0, 1], got ", rate));
        }
        l.out = in;
        break;
      }
      case v1::LayerSpec::kLeakyRelu:
        if (!std::isfinite(ls.leaky_relu().negative_slope())) {
          return Invalid(l.name, "leaky_relu negative_slope not finite");
        }
        l.out = in;
        break;
      case v1::LayerSpec::kRelu:
      case v1::LayerSpec::kSigmoid:
        l.out = in;
        break;
      case v1::LayerSpec::kFlatten:
        l.out = {static_cast<int>(Product(in))};
        break;
      case v1::LayerSpec::kEmbedding: {
        const auto& e = ls.embedding();
        if (!Positive(e.num_embeddings()) || !Positive(e.dim())) {
          return Invalid(l.name, "embedding num_embeddings and dim must be in [1, 2^20]");
        }
        if (in.size() != 1) {
          return Invalid(l.name, absl::StrCat("embedding expects input [count], got ",
                                              ShapeString(in)));
        }
        total_params += int64_t{e.num_embeddings()} * e.dim();
        l.out = {in[0], e.dim()};
        break;
      }
      case v1::LayerSpec::kConvTranspose2D:
      case v1::LayerSpec::kBatchNorm2D:
        // FedCG's generator and discriminator layers: fixed networks, never sliced.
        return Invalid(l.name, "conv_transpose2d and batch_norm2d layers cannot be sliced "
                               "into sub-models");
      case v1::LayerSpec::KIND_NOT_SET:
        return Invalid(l.name, "no layer kind set");
    }
    if (total_params > kMaxSpecParameters) {
      return Invalid(l.name, absl::StrCat("model exceeds ", kMaxSpecParameters, " parameters"));
    }
    for (int d : l.out) {
      if (d <= 0) return Invalid(l.name, "output shape collapses to zero");
    }
    if (Product(l.out) > kMaxSpecActivations) return Invalid(l.name, "activation too large");
    shape = l.out;
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// ⌈r·c⌉, at least 1, at most c; the epsilon keeps r·c that is an integer up to rounding
// (0.1·30 = 3.0000000000000004) from rounding up.
int64_t KeptCount(double r, int64_t c) {
  const double k = std::ceil(r * static_cast<double>(c) - 1e-9);
  return std::clamp<int64_t>(static_cast<int64_t>(k), 1, c);
}

// Calls f(sub_offset, full_offset) for every held coordinate, in ascending order of both.
template <typename F>
void ForEachHeld(const TensorSlice& s, F&& f) {
  const size_t rank = s.full_shape.size();
  if (rank == 0) {
    f(int64_t{0}, int64_t{0});
    return;
  }
  for (const auto& k : s.kept) {
    if (k.empty()) return;
  }
  std::vector<int64_t> stride(rank, 1);
  for (size_t d = rank - 1; d > 0; --d) stride[d - 1] = stride[d] * s.full_shape[d];
  const std::vector<int64_t>& last = s.kept[rank - 1];
  std::vector<size_t> pos(rank, 0);
  int64_t sub = 0;
  while (true) {
    int64_t base = 0;
    for (size_t d = 0; d + 1 < rank; ++d) base += s.kept[d][pos[d]] * stride[d];
    for (int64_t k : last) f(sub++, base + k);
    // Next position over dimensions 0..rank-2 (odometer, last of them fastest).
    size_t d = rank - 1;
    while (d > 0) {
      --d;
      if (++pos[d] < s.kept[d].size()) break;
      pos[d] = 0;
      if (d == 0) return;
    }
    if (rank == 1) return;
  }
}

}  // namespace

std::vector<int64_t> TensorSlice::sub_shape() const {
  std::vector<int64_t> s;
  s.reserve(kept.size());
  for (const auto& k : kept) s.push_back(static_cast<int64_t>(k.size()));
  return s;
}

bool TensorSlice::leading() const {
  for (const auto& k : kept) {
    for (size_t i = 0; i < k.size(); ++i) {
      if (k[i] != static_cast<int64_t>(i)) return false;
    }
  }
  return true;
}

int64_t TensorSlice::full_size() const {
  int64_t n = 1;
  for (int64_t d : full_shape) n *= d;
  return n;
}

int64_t TensorSlice::sub_size() const {
  int64_t n = 1;
  for (const auto& k : kept) n *= static_cast<int64_t>(k.size());
  return n;
}

absl::StatusOr<SubModelSlicer> SubModelSlicer::Create(const v1::ModelSpec& full,
                                                      double width_ratio,
                                                      SubModelExtraction extraction,
                                                      uint64_t seed) {
  if (!(width_ratio > 0.0 && width_ratio <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SubModelSlicer: width_ratio must be in (0, 1], got ", width_ratio));
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<LayerShape> layers, WalkSpec(full));
  int output_layer = -1;  // the last Dense or Conv2d keeps its full size
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    if (layers[i].spec->has_dense() || layers[i].spec->has_conv2d()) output_layer = i;
  }

  SubModelSlicer s;
  s.width_ratio_ = width_ratio;
  s.full_spec_ = full;
  for (int i = 0; i < full.layers_size(); ++i) {
    s.full_spec_.mutable_layers(i)->set_name(layers[i].name);
  }
  s.sub_spec_ = s.full_spec_;
  base::Rng rng(seed);
  auto choose = [&](int64_t c) {
    const int64_t k = KeptCount(width_ratio, c);
    std::vector<int64_t> all = Iota(c);
    if (extraction == SubModelExtraction::kLeading || k == c) {
      all.resize(static_cast<size_t>(k));
      return all;
    }
    // Partial Fisher-Yates: the first k of a uniform random permutation.
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i + static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(c - i)));
      std::swap(all[i], all[j]);
    }
    all.resize(static_cast<size_t>(k));
    std::sort(all.begin(), all.end());
    return all;
  };

  // The kept indices of the last dimension of the current activation (all of the input).
  std::vector<int64_t> kept = Iota(layers[0].in.back());
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    const LayerShape& l = layers[i];
    v1::LayerSpec* sub = s.sub_spec_.mutable_layers(i);
    const bool output = i == output_layer;
    if (l.spec->has_dense()) {
      const int out = l.spec->dense().out_features();
      std::vector<int64_t> out_kept = output ? Iota(out) : choose(out);
      s.slices_.push_back(TensorSlice{absl::StrCat(l.name, ".weight"),
                                      {out, l.in[0]},
                                      {out_kept, kept}});
      if (!l.spec->dense().no_bias()) {
        s.slices_.push_back(TensorSlice{absl::StrCat(l.name, ".bias"), {out}, {out_kept}});
      }
      sub->mutable_dense()->set_in_features(static_cast<int>(kept.size()));
      sub->mutable_dense()->set_out_features(static_cast<int>(out_kept.size()));
      kept = std::move(out_kept);
    } else if (l.spec->has_conv2d()) {
      const auto& c = l.spec->conv2d();
      const int out = c.out_channels();
      std::vector<int64_t> out_kept = output ? Iota(out) : choose(out);
      s.slices_.push_back(TensorSlice{
          absl::StrCat(l.name, ".weight"),
          {out, c.kernel_size(), c.kernel_size(), c.in_channels()},
          {out_kept, Iota(c.kernel_size()), Iota(c.kernel_size()), kept}});
      if (!c.no_bias()) {
        s.slices_.push_back(TensorSlice{absl::StrCat(l.name, ".bias"), {out}, {out_kept}});
      }
      sub->mutable_conv2d()->set_in_channels(static_cast<int>(kept.size()));
      sub->mutable_conv2d()->set_out_channels(static_cast<int>(out_kept.size()));
      kept = std::move(out_kept);
    } else if (l.spec->has_flatten()) {
      // Memory order: element (p, c) of a [..., C] activation is p·C + c.
      const int64_t channels = l.in.back();
      const int64_t positions = Product(l.in) / channels;
      std::vector<int64_t> flat;
      flat.reserve(static_cast<size_t>(positions) * kept.size());
      for (int64_t p = 0; p < positions; ++p) {
        for (int64_t c : kept) flat.push_back(p * channels + c);
      }
      kept = std::move(flat);
    } else if (l.spec->has_embedding()) {
      if (static_cast<int64_t>(kept.size()) != l.in.back()) {
        return Invalid(l.name, "an embedding must see its full input (it follows a sliced layer)");
      }
      const auto& e = l.spec->embedding();
      s.slices_.push_back(TensorSlice{absl::StrCat(l.name, ".weight"),
                                      {e.num_embeddings(), e.dim()},
                                      {Iota(e.num_embeddings()), Iota(e.dim())}});
      kept = Iota(e.dim());
    }
    // Relu, Sigmoid, LeakyRelu, MaxPool2d and AvgPool2d keep the channel subset as it is.
  }
  s.scaled_sub_spec_ = s.sub_spec_;
  if (width_ratio < 1) {
    s.scaled_sub_spec_.clear_layers();
    for (int i = 0; i < s.sub_spec_.layers_size(); ++i) {
      const v1::LayerSpec& l = s.sub_spec_.layers(i);
      *s.scaled_sub_spec_.add_layers() = l;
      if (i != output_layer && (l.has_dense() || l.has_conv2d())) {
        v1::LayerSpec* scaler = s.scaled_sub_spec_.add_layers();
        scaler->set_name(absl::StrCat(l.name(), "_scaler"));
        scaler->mutable_scaler()->set_rate(static_cast<float>(width_ratio));
      }
    }
  }
  return s;
}

absl::StatusOr<v1::ModelProto> SubModelSlicer::Slice(const v1::ModelProto& full) const {
  absl::flat_hash_map<std::string, const v1::TensorProto*> by_name;
  for (const v1::TensorProto& t : full.parameters()) {
    if (!by_name.emplace(t.name(), &t).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("SubModelSlicer: parameter '", t.name(), "' appears twice"));
    }
  }
  if (by_name.size() != slices_.size()) {
    for (const auto& entry : by_name) {
      const std::string& name = entry.first;  // (a structured binding cannot be captured in C++17)
      if (std::none_of(slices_.begin(), slices_.end(),
                       [&](const TensorSlice& s) { return s.name == name; })) {
        return absl::InvalidArgumentError(
            absl::StrCat("SubModelSlicer: unknown parameter '", name, "'"));
      }
    }
  }
  v1::ModelProto out;
  *out.mutable_spec() = sub_spec_;
  for (const TensorSlice& s : slices_) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SubModelSlicer: parameter '", s.name, "' missing"));
    }
    const v1::TensorProto& t = *it->second;
    if (!std::equal(t.shape().begin(), t.shape().end(), s.full_shape.begin(),
                    s.full_shape.end())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SubModelSlicer: parameter '", s.name, "' has shape [", absl::StrJoin(t.shape(), ", "),
          "], expected [", absl::StrJoin(s.full_shape, ", "), "]"));
    }
    if (t.values_size() != s.full_size()) {
      return absl::InvalidArgumentError(absl::StrCat("SubModelSlicer: parameter '", s.name,
                                                     "' has ", t.values_size(),
                                                     " values, expected ", s.full_size()));
    }
    v1::TensorProto* st = out.add_parameters();
    st->set_name(s.name);
    for (int64_t d : s.sub_shape()) st->add_shape(d);
    st->mutable_values()->Resize(static_cast<int>(s.sub_size()), 0.0f);
    float* dst = st->mutable_values()->mutable_data();
    const float* src = t.values().data();
    ForEachHeld(s, [&](int64_t sub, int64_t f) { dst[sub] = src[f]; });
  }
  return out;
}

absl::Status SubModelSlicer::Unslice(const TensorSlice& slice, absl::Span<const float> sub,
                                     absl::Span<float> full) const {
  if (static_cast<int64_t>(sub.size()) != slice.sub_size() ||
      static_cast<int64_t>(full.size()) != slice.full_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SubModelSlicer: unslicing '", slice.name, "' needs ", slice.sub_size(),
        " sub-model values into ", slice.full_size(), ", got ", sub.size(), " into ",
        full.size()));
  }
  ForEachHeld(slice, [&](int64_t s, int64_t f) { full[f] = sub[s]; });
  return absl::OkStatus();
}

std::vector<int64_t> SubModelSlicer::HeldIndices(const TensorSlice& slice) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(slice.sub_size()));
  ForEachHeld(slice, [&](int64_t, int64_t f) { out.push_back(f); });
  return out;
}

int64_t Conv2dScratchFloats(int kernel_size, int in_channels, int out_channels, int out_height,
                            int out_width, int64_t batch) {
  const int64_t kpad = (int64_t{kernel_size} * kernel_size * in_channels + 15) / 16 * 16;
  // Conv2d's chunk holds about 64 Ki floats of im2col rows, or one example's when that is
  // more: chunk·OH·OW·kpad ≤ max(64 Ki, OH·OW·kpad), and never more than the batch. cols,
  // dcols and the output chunk counted at that bound; plus dW over the padded K.
  const int64_t per_example = int64_t{out_height} * out_width * kpad;
  const int64_t cols = std::min(batch * per_example, std::max<int64_t>(64 * 1024, per_example));
  return 3 * cols + int64_t{out_channels} * kpad;
}

int64_t EstimateTrainingMemoryBytes(const v1::ModelSpec& spec, int batch_size, bool adam) {
  if (batch_size < 1) return -1;
  absl::StatusOr<std::vector<LayerShape>> layers = WalkSpec(spec);
  if (!layers.ok()) return -1;
  const int64_t batch = batch_size;
  int64_t params = 0, weights = 0, scratch_floats = 0;
  int64_t act_floats = Product((*layers)[0].in);
  int64_t max_act = act_floats;
  for (const LayerShape& l : *layers) {
    const int64_t out = Product(l.out);
    act_floats += out;
    max_act = std::max(max_act, out);
    if (l.spec->has_dense()) {
      const auto& d = l.spec->dense();
      const int64_t w = int64_t{d.in_features()} * d.out_features();
      weights += w;
      params += w + (d.no_bias() ? 0 : d.out_features());
    } else if (l.spec->has_conv2d()) {
      const auto& c = l.spec->conv2d();
      const int64_t w = int64_t{c.kernel_size()} * c.kernel_size() * c.in_channels() * c.out_channels();
      weights += w;
      params += w + (c.no_bias() ? 0 : c.out_channels());
      scratch_floats += Conv2dScratchFloats(c.kernel_size(), c.in_channels(), c.out_channels(),
                                            l.out[0], l.out[1], batch);
    } else if (l.spec->has_embedding()) {
      params += int64_t{l.spec->embedding().num_embeddings()} * l.spec->embedding().dim();
    }
  }
  const int64_t slots = adam ? 2 : 1;
  const int64_t param_bytes = 4 * params * (3 + slots);
  const int64_t act_bytes = 4 * batch * (act_floats + 2 * max_act);
  return param_bytes + act_bytes + 4 * scratch_floats + weights;
}

namespace {

// Parameters and per-example activation floats (input + every layer's output) of a spec.
bool CountSpec(const v1::ModelSpec& spec, int64_t* params, int64_t* act_floats) {
  absl::StatusOr<std::vector<LayerShape>> layers = WalkSpec(spec);
  if (!layers.ok()) return false;
  *params = 0;
  *act_floats = Product((*layers)[0].in);
  for (const LayerShape& l : *layers) {
    *act_floats += Product(l.out);
    if (l.spec->has_dense()) {
      const auto& d = l.spec->dense();
      *params += int64_t{d.in_features()} * d.out_features() + (d.no_bias() ? 0 : d.out_features());
    } else if (l.spec->has_conv2d()) {
      const auto& c = l.spec->conv2d();
      *params += int64_t{c.kernel_size()} * c.kernel_size() * c.in_channels() * c.out_channels() +
                 (c.no_bias() ? 0 : c.out_channels());
    } else if (l.spec->has_embedding()) {
      *params += int64_t{l.spec->embedding().num_embeddings()} * l.spec->embedding().dim();
    }
  }
  return true;
}

}  // namespace

int64_t EstimateDeviceRoundMemoryBytes(const v1::ModelSpec& spec, int batch_size, bool adam) {
  const int64_t training = EstimateTrainingMemoryBytes(spec, batch_size, adam);
  int64_t params = 0, act_floats = 0;
  if (training < 0 || !CountSpec(spec, &params, &act_floats)) return -1;
  return training + 3 * 4 * params;
}

int64_t EstimateTeacherMemoryBytes(const v1::ModelSpec& spec, int batch_size) {
  int64_t params = 0, act_floats = 0;
  if (batch_size < 1 || !CountSpec(spec, &params, &act_floats)) return -1;
  return 9 * params + 4 * int64_t{batch_size} * act_floats;
}

}  // namespace fedge::model
