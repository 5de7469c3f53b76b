#include "model/sequential.h"

#include <limits>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "model/layers.h"
#include "model/serialize.h"

namespace fedge::model {
namespace {

constexpr int kMaxDim = 1 << 20;

// a·b, saturating at INT64_MAX; negative factors count as 0 (the layer refuses them).
int64_t SatMul(int64_t a, int64_t b) {
  if (a <= 0 || b <= 0) return 0;
  if (a > std::numeric_limits<int64_t>::max() / b) return std::numeric_limits<int64_t>::max();
  return a * b;
}

int64_t SatAdd(int64_t a, int64_t b) {
  return a > std::numeric_limits<int64_t>::max() - b ? std::numeric_limits<int64_t>::max() : a + b;
}

absl::Status Invalid(const std::string& layer, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("ModelSpec: layer '", layer, "': ", what));
}

std::string ShapeString(const std::vector<int>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

bool Positive(int v) { return v > 0 && v <= kMaxDim; }

// Builds one layer whose input has per-example shape `in`, or says why it can't.
absl::StatusOr<std::unique_ptr<Layer>> BuildLayer(const v1::LayerSpec& ls,
                                                  const std::vector<int>& in) {
  const std::string& name = ls.name();
  int64_t in_size = 1;
  for (int d : in) in_size *= d;
  switch (ls.kind_case()) {
    case v1::LayerSpec::kDense: {
      const auto& d = ls.dense();
      if (!Positive(d.in_features()) || !Positive(d.out_features())) {
        return Invalid(name, "dense in_features and out_features must be in [1, 2^20]");
      }
      if (in.size() != 1 || in[0] != d.in_features()) {
        return Invalid(name, absl::StrCat("dense expects input [", d.in_features(), "], got ",
                                          ShapeString(in)));
      }
      return std::unique_ptr<Layer>(new Dense(name, d.in_features(), d.out_features(),
                                              !d.no_bias(), d.spectral_norm()));
    }
    case v1::LayerSpec::kConv2D: {
      const auto& c = ls.conv2d();
      const int stride = c.stride() == 0 ? 1 : c.stride();
      if (in.size() != 3) {
        return Invalid(name, absl::StrCat("conv2d expects input [H, W, C], got ",
                                          ShapeString(in)));
      }
      if (!Positive(c.in_channels()) || !Positive(c.out_channels()) ||
          !Positive(c.kernel_size()) || !Positive(stride) || c.padding() < 0 ||
          c.padding() > 64) {
        return Invalid(name, "conv2d channels, kernel_size and stride must be positive, "
                             "padding in [0, 64]");
      }
      if (in[2] != c.in_channels()) {
        return Invalid(name, absl::StrCat("conv2d in_channels ", c.in_channels(),
                                          " but input has ", in[2], " channels"));
      }
      if (c.kernel_size() > in[0] + 2 * c.padding() ||
          c.kernel_size() > in[1] + 2 * c.padding()) {
        return Invalid(name, absl::StrCat("conv2d kernel ", c.kernel_size(),
                                          " larger than the padded input ", ShapeString(in)));
      }
      if (!std::isfinite(c.init_std()) || c.init_std() < 0.0f) {
        return Invalid(name, "conv2d init_std must be finite and >= 0");
      }
      // Its im2col scratch holds OH·OW·K²·Cin floats per example: bounded like an activation
      // (a 1×1-channel input padded to 129×129 with a 129×129 kernel would need gigabytes).
      const int64_t oh = (int64_t{in[0]} + 2 * c.padding() - c.kernel_size()) / stride + 1;
      const int64_t ow = (int64_t{in[1]} + 2 * c.padding() - c.kernel_size()) / stride + 1;
      if (SatMul(SatMul(oh, ow), SatMul(SatMul(c.kernel_size(), c.kernel_size()), in[2])) >
          kMaxActivationsPerExample) {
        return Invalid(name, "conv2d scratch (OH·OW·K²·Cin) too large");
      }
      return std::unique_ptr<Layer>(new Conv2d(name, in[0], in[1], in[2], c.out_channels(),
                                               c.kernel_size(), stride, c.padding(),
                                               !c.no_bias()));
    }
    case v1::LayerSpec::kConvTranspose2D: {
      const auto& c = ls.conv_transpose2d();
      const int stride = c.stride() == 0 ? 1 : c.stride();
      if (in.size() != 3) {
        return Invalid(name, absl::StrCat("conv_transpose2d expects input [H, W, C], got ",
                                          ShapeString(in)));
      }
      if (!Positive(c.in_channels()) || !Positive(c.out_channels()) ||
          !Positive(c.kernel_size()) || c.kernel_size() > 64 || !Positive(stride) ||
          stride > 64 || c.padding() < 0 || c.padding() > 64) {
        return Invalid(name, "conv_transpose2d channels must be positive, kernel_size and "
                             "stride in [1, 64], padding in [0, 64]");
      }
      if (in[2] != c.in_channels()) {
        return Invalid(name, absl::StrCat("conv_transpose2d in_channels ", c.in_channels(),
                                          " but input has ", in[2], " channels"));
      }
      const int64_t oh = int64_t{in[0] - 1} * stride - 2 * c.padding() + c.kernel_size();
      const int64_t ow = int64_t{in[1] - 1} * stride - 2 * c.padding() + c.kernel_size();
      if (oh < 1 || ow < 1 || oh > kMaxDim || ow > kMaxDim) {
        return Invalid(name, absl::StrCat("conv_transpose2d output ", oh, " x ", ow,
                                          " from input ", ShapeString(in)));
      }
      if (!std::isfinite(c.init_std()) || c.init_std() < 0.0f) {
        return Invalid(name, "conv_transpose2d init_std must be finite and >= 0");
      }
      // Its scratch holds H·W·K²·Cout floats per example.
      if (int64_t{in[0]} * in[1] * c.kernel_size() * c.kernel_size() * c.out_channels() >
          kMaxActivationsPerExample) {
        return Invalid(name, "conv_transpose2d scratch (H·W·K²·Cout) too large");
      }
      return std::unique_ptr<Layer>(new ConvTranspose2d(name, in[0], in[1], in[2],
                                                        c.out_channels(), c.kernel_size(),
                                                        stride, c.padding(), !c.no_bias()));
    }
    case v1::LayerSpec::kBatchNorm2D: {
      const auto& b = ls.batch_norm2d();
      const float momentum = b.momentum() == 0.0f ? 0.1f : b.momentum();
      const float eps = b.epsilon() == 0.0f ? 1e-5f : b.epsilon();
      if (!(momentum > 0.0f && momentum <= 1.0f) || !(eps > 0.0f && std::isfinite(eps)) ||
          !std::isfinite(b.init_std()) || b.init_std() < 0.0f) {
        return Invalid(name, "batch_norm2d momentum must be in (0, 1], epsilon > 0, "
                             "init_std finite and >= 0");
      }
      return std::unique_ptr<Layer>(new BatchNorm2d(name, in, momentum, eps));
    }
    case v1::LayerSpec::kMaxPool2D: {
      const auto& p = ls.max_pool2d();
      const int stride = p.stride() == 0 ? p.kernel_size() : p.stride();
      if (in.size() != 3) {
        return Invalid(name, absl::StrCat("max_pool2d expects input [H, W, C], got ",
                                          ShapeString(in)));
      }
      if (!Positive(p.kernel_size()) || !Positive(stride) || p.kernel_size() > in[0] ||
          p.kernel_size() > in[1]) {
        return Invalid(name, "max_pool2d kernel_size must be in [1, input size], stride > 0");
      }
      return std::unique_ptr<Layer>(
          new MaxPool2d(name, in[0], in[1], in[2], p.kernel_size(), stride));
    }
    case v1::LayerSpec::kAvgPool2D: {
      const auto& p = ls.avg_pool2d();
      const int stride = p.stride() == 0 ? p.kernel_size() : p.stride();
      if (in.size() != 3) {
        return Invalid(name, absl::StrCat("avg_pool2d expects input [H, W, C], got ",
                                          ShapeString(in)));
      }
      if (!Positive(p.kernel_size()) || !Positive(stride) || p.kernel_size() > in[0] ||
          p.kernel_size() > in[1]) {
        return Invalid(name, "avg_pool2d kernel_size must be in [1, input size], stride > 0");
      }
      return std::unique_ptr<Layer>(
          new AvgPool2d(name, in[0], in[1], in[2], p.kernel_size(), stride));
    }
    case v1::LayerSpec::kSigmoid:
      return std::unique_ptr<Layer>(new Sigmoid(name, in));
    case v1::LayerSpec::kScaler: {
      const float rate = ls.scaler().rate();
      if (!std::isfinite(rate) || !(rate > 0.0f) || rate > 1.0f) {
        return Invalid(name, absl::StrCat("scaler rate must be in (0, 1], got ", rate));
      }
      return std::unique_ptr<Layer>(new Scaler(name, in, rate));
    }
    case v1::LayerSpec::kLeakyRelu: {
      const float slope =
          ls.leaky_relu().negative_slope() == 0.0f ? 0.01f : ls.leaky_relu().negative_slope();
      if (!std::isfinite(slope)) return Invalid(name, "leaky_relu negative_slope not finite");
      return std::unique_ptr<Layer>(new LeakyRelu(name, in, slope));
    }
    case v1::LayerSpec::kRelu:
      return std::unique_ptr<Layer>(new Relu(name, in));
    case v1::LayerSpec::kFlatten:
      return std::unique_ptr<Layer>(new Flatten(name, in));
    case v1::LayerSpec::kEmbedding: {
      const auto& e = ls.embedding();
      if (!Positive(e.num_embeddings()) || !Positive(e.dim())) {
        return Invalid(name, "embedding num_embeddings and dim must be in [1, 2^20]");
      }
      if (in.size() != 1) {
        return Invalid(name, absl::StrCat("embedding expects input [count], got ",
                                          ShapeString(in)));
      }
      return std::unique_ptr<Layer>(
          new Embedding(name, in[0], e.num_embeddings(), e.dim()));
    }
    case v1::LayerSpec::KIND_NOT_SET:
      break;
  }
  return Invalid(name, "no layer kind set");
}

}  // namespace

int64_t LayerParameterCount(const v1::LayerSpec& ls, int64_t channels) {
  if (ls.has_dense()) return SatMul(ls.dense().in_features(), ls.dense().out_features());
  if (ls.has_conv2d()) {
    const auto& c = ls.conv2d();
    return SatMul(SatMul(c.in_channels(), c.out_channels()),
                  SatMul(c.kernel_size(), c.kernel_size()));
  }
  if (ls.has_conv_transpose2d()) {
    const auto& c = ls.conv_transpose2d();
    return SatMul(SatMul(c.in_channels(), c.out_channels()),
                  SatMul(c.kernel_size(), c.kernel_size()));
  }
  if (ls.has_batch_norm2d()) return SatMul(4, channels);
  if (ls.has_embedding()) return SatMul(ls.embedding().num_embeddings(), ls.embedding().dim());
  return 0;
}

int64_t SpecParameterCount(const v1::ModelSpec& spec) {
  int64_t total = 0;
  for (const v1::LayerSpec& ls : spec.layers()) {
    // Batch norm's channels follow from the layers before it; bounded by the largest
    // dimension a spec may have.
    total = SatAdd(total, LayerParameterCount(ls, kMaxDim));
  }
  return total;
}

absl::StatusOr<std::unique_ptr<Sequential>> Sequential::Create(const v1::ModelSpec& spec) {
  if (spec.has_transformer()) {
    return absl::InvalidArgumentError(
        "ModelSpec: a language model (transformer), not a sequential network");
  }
  if (spec.layers_size() == 0) return absl::InvalidArgumentError("ModelSpec: no layers");
  if (spec.layers_size() > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("ModelSpec: ", spec.layers_size(), " layers, at most ", kMaxLayers));
  }
  if (spec.input_shape_size() < 1 || spec.input_shape_size() > 3) {
    return absl::InvalidArgumentError("ModelSpec: input_shape must have 1 to 3 dimensions");
  }
  std::vector<int> shape(spec.input_shape().begin(), spec.input_shape().end());
  for (int d : shape) {
    if (!Positive(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ModelSpec: input_shape ", ShapeString(shape), " has a bad dimension"));
    }
  }
  std::unique_ptr<Sequential> net(new Sequential);
  net->spec_ = spec;
  absl::flat_hash_set<std::string> names;
  int64_t total_params = 0;
  int64_t in_size = 1;
  for (int d : shape) in_size *= d;
  if (in_size > kMaxActivationsPerExample) {
    return absl::InvalidArgumentError("ModelSpec: input too large");
  }
  net->input_size_ = static_cast<int>(in_size);
  int64_t max_act = in_size;
  for (int i = 0; i < spec.layers_size(); ++i) {
    v1::LayerSpec ls = spec.layers(i);
    if (ls.name().empty()) ls.set_name(absl::StrCat("layer", i));
    net->spec_.mutable_layers(i)->set_name(ls.name());
    if (!names.insert(ls.name()).second) {
      return Invalid(ls.name(), "duplicate layer name");
    }
    // Check the parameter count before allocating anything (saturating: no overflow).
    const int64_t layer_params = LayerParameterCount(ls, shape.empty() ? 1 : shape.back());
    total_params = layer_params > kMaxParameters ? layer_params : total_params + layer_params;
    if (total_params > kMaxParameters) {
      return Invalid(ls.name(), absl::StrCat("model exceeds ", kMaxParameters, " parameters"));
    }
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Layer> layer, BuildLayer(ls, shape));
    int64_t out_size = 1;
    for (int d : layer->output_shape()) {
      if (d <= 0) return Invalid(ls.name(), "output shape collapses to zero");
      out_size *= d;
    }
    if (out_size > kMaxActivationsPerExample) {
      return Invalid(ls.name(), "activation too large");
    }
    max_act = std::max(max_act, out_size);
    shape = layer->output_shape();
    for (Parameter* p : layer->parameters()) net->params_.push_back(p);
    net->layers_.push_back(std::move(layer));
  }
  net->output_size_ = net->layers_.back()->output_size();
  net->max_activation_ = static_cast<int>(max_act);
  return net;
}

absl::StatusOr<std::unique_ptr<Sequential>> Sequential::FromProto(
    const v1::ModelProto& proto) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Sequential> net, Create(proto.spec()));
  FEDGE_RETURN_IF_ERROR(net->SetParameters(proto));
  return net;
}

void Sequential::InitParameters(uint64_t seed) {
  base::Rng rng(seed);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& layer = *layers_[i];
    std::vector<Parameter*> ps = layer.parameters();
    if (ps.empty()) continue;
    const v1::LayerSpec& ls = spec_.layers(static_cast<int>(i));
    if (ls.has_batch_norm2d()) {
      // γ = 1 (or N(1, std²)), β = 0, running mean 0 and variance 1.
      const double std = ls.batch_norm2d().init_std();
      for (float& v : ps[0]->value) v = static_cast<float>(1.0 + std * (std > 0 ? rng.Normal() : 0.0));
      std::fill(ps[1]->value.begin(), ps[1]->value.end(), 0.0f);
      std::fill(ps[2]->value.begin(), ps[2]->value.end(), 0.0f);
      std::fill(ps[3]->value.begin(), ps[3]->value.end(), 1.0f);
      for (Parameter* p : ps) ++p->version;
      continue;
    }
    const double init_std = ls.has_conv2d()             ? ls.conv2d().init_std()
                            : ls.has_conv_transpose2d() ? ls.conv_transpose2d().init_std()
                                                        : 0.0;
    if (init_std > 0) {
      // DCGAN's weights_init: W ~ N(0, std²), bias 0.
      for (float& v : ps[0]->value) v = static_cast<float>(init_std * rng.Normal());
      for (size_t j = 1; j < ps.size(); ++j) {
        std::fill(ps[j]->value.begin(), ps[j]->value.end(), 0.0f);
      }
      for (Parameter* p : ps) ++p->version;
      continue;
    }
    const bool embedding = dynamic_cast<Embedding*>(&layer) != nullptr;
    // fan_in = weight size / first dimension (the output units; for a transposed
    // convolution's [Cin, K, K, Cout] that is K·K·Cout, as PyTorch computes it there too).
    const Parameter* w = ps[0];
    const double fan_in = static_cast<double>(w->size()) / w->shape[0];
    const double bound = 1.0 / std::sqrt(fan_in);
    for (Parameter* p : ps) {
      for (float& v : p->value) {
        v = embedding ? static_cast<float>(rng.Normal())
                      : static_cast<float>((2.0 * rng.Uniform() - 1.0) * bound);
      }
      ++p->version;
    }
  }
}

absl::Status Sequential::SetParameters(const v1::ModelProto& proto) {
  return CopyParametersFromProto(proto, params_);
}

v1::ModelProto Sequential::ToProto() const {
  v1::ModelProto proto;
  *proto.mutable_spec() = spec_;
  AppendParametersToProto(params_, proto);
  return proto;
}

void Sequential::EnsureBuffers(int batch) {
  if (batch <= buffer_batch_) return;
  acts_.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    acts_[i].resize(static_cast<size_t>(batch) * layers_[i]->output_size());
  }
  grad_a_.resize(static_cast<size_t>(batch) * max_activation_);
  grad_b_.resize(static_cast<size_t>(batch) * max_activation_);
  buffer_batch_ = batch;
}

const float* Sequential::Forward(const float* x, int batch, ComputeMode mode, bool training) {
  FEDGE_CHECK(batch > 0);
  EnsureBuffers(batch);
  const float* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->Forward(in, batch, acts_[i].data(), mode, training);
    in = acts_[i].data();
  }
  last_batch_ = batch;
  last_input_ = training ? x : nullptr;
  return in;
}

void Sequential::Backward(const float* doutput, float* dinput) {
  FEDGE_CHECK(last_input_ != nullptr);
  const int batch = last_batch_;
  const float* dy = doutput;
  for (int i = static_cast<int>(layers_.size()) - 1; i >= 0; --i) {
    const float* x = i == 0 ? last_input_ : acts_[i - 1].data();
    // The first layer's input gradient is computed only when asked for.
    float* dx = i == 0 ? dinput : (dy == grad_a_.data() ? grad_b_.data() : grad_a_.data());
    layers_[i]->Backward(x, acts_[i].data(), dy, batch, dx);
    dy = dx;
  }
}

void Sequential::ZeroGrad() {
  for (Parameter* p : params_) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
}

std::vector<Parameter*> Sequential::parameters() { return params_; }

Parameter* Sequential::FindParameter(const std::string& name) {
  for (Parameter* p : params_) {
    if (p->name == name) return p;
  }
  return nullptr;
}

int64_t Sequential::num_parameters() const {
  int64_t n = 0;
  for (const Parameter* p : params_) n += p->size();
  return n;
}

}  // namespace fedge::model
