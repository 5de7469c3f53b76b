#include "client/fedcg_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "data/image_transform.h"
#include "model/loss.h"
#include "model/submodel_slicer.h"

namespace fedge::client {
namespace {

std::vector<model::Parameter*> Concat(std::vector<model::Parameter*> a,
                                      const std::vector<model::Parameter*>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void FillNormal(base::Rng& rng, std::vector<float>& v) {
  for (float& x : v) x = static_cast<float>(rng.Normal());
}

void AddTensor(const model::Parameter& p, v1::ModelProto& proto) {
  v1::TensorProto* t = proto.add_parameters();
  t->set_name(p.name);
  for (int d : p.shape) t->add_shape(d);
  t->mutable_values()->Assign(p.value.begin(), p.value.end());
}

}  // namespace

float FedCgGamma(int round, int ramp_rounds) {
  const double p =
      ramp_rounds <= 0 ? 1.0 : std::min(static_cast<double>(round) / ramp_rounds, 1.0);
  return static_cast<float>(2.0 / (1.0 + std::exp(-10.0 * p)) - 1.0);
}

absl::Status SetParametersByName(const std::vector<model::Parameter*>& params,
                                 const v1::ModelProto& proto, bool exact) {
  absl::flat_hash_map<std::string, const v1::TensorProto*> by_name;
  for (const v1::TensorProto& t : proto.parameters()) {
    if (!by_name.emplace(t.name(), &t).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("FedCG: tensor '", t.name(), "' appears twice"));
    }
  }
  if (exact && by_name.size() != params.size()) {
    for (const auto& [name, t] : by_name) {
      bool known = false;
      for (const model::Parameter* p : params) known |= p->name == name;
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat("FedCG: unexpected tensor '", name, "'"));
      }
    }
  }
  for (model::Parameter* p : params) {
    auto it = by_name.find(p->name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat("FedCG: tensor '", p->name, "' missing"));
    }
    const v1::TensorProto& t = *it->second;
    bool same_shape = t.shape_size() == static_cast<int>(p->shape.size());
    for (int i = 0; same_shape && i < t.shape_size(); ++i) same_shape = t.shape(i) == p->shape[i];
    if (!same_shape || t.values_size() != p->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FedCG: tensor '", p->name, "' has the wrong shape or size"));
    }
    for (float v : t.values()) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("FedCG: tensor '", p->name, "' has a non-finite value"));
      }
    }
  }
  for (model::Parameter* p : params) {
    const v1::TensorProto& t = *by_name[p->name];
    std::copy(t.values().begin(), t.values().end(), p->value.begin());
    ++p->version;
  }
  return absl::OkStatus();
}

v1::ModelProto SharedParametersProto(model::Sequential& classifier,
                                     model::ConditionalNet& generator) {
  v1::ModelProto proto;
  for (const model::Parameter* p : classifier.parameters()) AddTensor(*p, proto);
  for (const model::Parameter* p : generator.parameters()) AddTensor(*p, proto);
  return proto;
}

absl::StatusOr<std::unique_ptr<FedCgClient>> FedCgClient::Create(
    const model::FedCgShape& shape, const FedCgClientOptions& options, uint64_t seed) {
  if (options.local_epochs < 0 || options.gan_epochs < 0 || options.batch_size < 1 ||
      options.local_epochs > 10000 || options.gan_epochs > 10000 ||
      options.batch_size > 65536 || !(options.learning_rate > 0) ||
      !(options.gan_learning_rate > 0) || !(options.weight_decay >= 0)) {
    return absl::InvalidArgumentError(
        "FedCG: epochs must be in [0, 10000], batch_size in [1, 65536], learning rates > 0, "
        "weight_decay >= 0");
  }
  std::unique_ptr<FedCgClient> c(new FedCgClient);
  c->shape_ = shape;
  c->options_ = options;
  c->seed_ = seed;
  FEDGE_ASSIGN_OR_RETURN(c->extractor_, model::CreateFedCgExtractor(shape));
  FEDGE_ASSIGN_OR_RETURN(c->classifier_, model::CreateFedCgClassifier(shape));
  FEDGE_ASSIGN_OR_RETURN(c->generator_, model::CreateFedCgGenerator(shape));
  FEDGE_ASSIGN_OR_RETURN(c->discriminator_, model::CreateFedCgDiscriminator(shape));
  c->extractor_->InitParameters(seed * 4 + 1);
  c->discriminator_->InitParameters(seed * 4 + 2);
  model::AdamOptions ec;
  ec.learning_rate = options.learning_rate;
  ec.weight_decay = options.weight_decay;
  FEDGE_ASSIGN_OR_RETURN(c->opt_ec_, model::Adam::Create(ec));
  model::AdamOptions gan;
  gan.learning_rate = options.gan_learning_rate;
  gan.beta1 = options.gan_beta1;
  gan.beta2 = options.gan_beta2;
  FEDGE_ASSIGN_OR_RETURN(c->opt_d_, model::Adam::Create(gan));
  FEDGE_ASSIGN_OR_RETURN(c->opt_g_, model::Adam::Create(gan));
  return c;
}

absl::Status FedCgClient::CheckData(const data::Dataset& data) const {
  FEDGE_RETURN_IF_ERROR(data::ValidateDataset(data));
  const size_t want =
      static_cast<size_t>(shape_.channels) * shape_.image_size * shape_.image_size;
  if (data.feature_size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("FedCG: examples have ", data.feature_size(),
                                                   " floats, the extractor takes ", want));
  }
  if (data.num_classes > shape_.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("FedCG: data has ", data.num_classes,
                                                   " classes, the model ", shape_.num_classes));
  }
  if (data.num_examples == 0) return absl::InvalidArgumentError("FedCG: no local examples");
  return absl::OkStatus();
}

absl::StatusOr<FedCgUpdate> FedCgClient::TrainRound(const v1::ModelProto& global,
                                                    const data::Dataset& data, int round,
                                                    const std::function<bool()>& cancelled) {
  const auto start = std::chrono::steady_clock::now();
  FEDGE_RETURN_IF_ERROR(CheckData(data));
  const std::vector<model::Parameter*> c_params = classifier_->parameters();
  const std::vector<model::Parameter*> g_params = generator_->parameters();
  FEDGE_RETURN_IF_ERROR(SetParametersByName(Concat(c_params, g_params), global, true));
  const v1::ModelProto received = SharedParametersProto(*classifier_, *generator_);

  const int n = data.num_examples, in = static_cast<int>(data.feature_size());
  const int feat = shape_.feature_size(), nz = shape_.noise_dim, k = shape_.num_classes;
  const int bs = options_.batch_size;
  base::Rng rng(seed_, static_cast<uint64_t>(round) + 1);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> x(static_cast<size_t>(bs) * in), z(static_cast<size_t>(bs) * nz);
  std::vector<int32_t> y(bs);
  std::vector<float> dlogits(static_cast<size_t>(bs) * k), df(static_cast<size_t>(bs) * feat);
  std::vector<float> target(static_cast<size_t>(bs) * feat), dmse(df.size());
  std::vector<float> real(static_cast<size_t>(bs) * feat), fake(real.size());
  std::vector<float> ones(bs, 1.0f), zeros(bs, 0.0f), dd(bs), dfake(real.size());
  auto load = [&](int begin, int b) {
    for (int i = 0; i < b; ++i) {
      const int e = order[begin + i];
      std::copy(data.example(e), data.example(e) + in, x.begin() + static_cast<size_t>(i) * in);
      y[i] = data.label(e);
    }
  };
  FedCgUpdate out;
  out.num_examples = n;
  out.gamma = FedCgGamma(round, options_.gamma_ramp_rounds);
  const float gamma = static_cast<float>(out.gamma);

  // Step 1: E and C with CE + γ·MSE(E(x), G_global(z, y)); G_global is frozen.
  const std::vector<model::Parameter*> ec_params =
      Concat(extractor_->parameters(), c_params);
  for (int epoch = 0; epoch < options_.local_epochs; ++epoch) {
    rng.Shuffle(order);
    double ce_sum = 0, mse_sum = 0;
    int64_t correct = 0, batches = 0;
    for (int begin = 0; begin < n; begin += bs) {
      if (cancelled && cancelled()) return absl::CancelledError("FedCG: training cancelled");
      const int b = std::min(bs, n - begin);
      load(begin, b);
      if (gamma > 0) {
        z.resize(static_cast<size_t>(b) * nz);
        FillNormal(rng, z);
        const float* g = generator_->Forward(z.data(), y.data(), b, /*training=*/false);
        std::copy(g, g + static_cast<size_t>(b) * feat, target.begin());
      }
      extractor_->ZeroGrad();
      classifier_->ZeroGrad();
      const float* f = extractor_->Forward(x.data(), b, model::ComputeMode::kFp32, true);
      const float* logits = classifier_->Forward(f, b, model::ComputeMode::kFp32, true);
      ce_sum += model::SoftmaxCrossEntropy(logits, y.data(), b, k, dlogits.data());
      correct += model::CountCorrect(logits, y.data(), b, k);
      classifier_->Backward(dlogits.data(), df.data());
      if (gamma > 0) {
        const int64_t m = static_cast<int64_t>(b) * feat;
        mse_sum += model::MeanSquaredError(f, target.data(), m, dmse.data());
        for (int64_t i = 0; i < m; ++i) df[i] += gamma * dmse[i];
      }
      extractor_->Backward(df.data());
      opt_ec_->Step(ec_params);
      ++batches;
      ++out.steps;
    }
    out.classifier_loss = ce_sum / std::max<int64_t>(batches, 1);
    out.distance_loss = mse_sum / std::max<int64_t>(batches, 1);
    out.train_accuracy = static_cast<double>(correct) / n;
  }

  // Step 2: the conditional GAN, E frozen: D tells E(x) from G(z, y); G learns to fool D.
  const std::vector<model::Parameter*> d_params = discriminator_->parameters();
  for (int epoch = 0; epoch < options_.gan_epochs; ++epoch) {
    rng.Shuffle(order);
    double d_sum = 0, g_sum = 0;
    int64_t batches = 0;
    for (int begin = 0; begin < n; begin += bs) {
      if (cancelled && cancelled()) return absl::CancelledError("FedCG: training cancelled");
      const int b = std::min(bs, n - begin);
      load(begin, b);
      const int64_t m = static_cast<int64_t>(b) * feat;
      const float* f = extractor_->Forward(x.data(), b, model::ComputeMode::kFp32, false);
      std::copy(f, f + m, real.begin());
      z.resize(static_cast<size_t>(b) * nz);
      FillNormal(rng, z);
      const float* g = generator_->Forward(z.data(), y.data(), b, /*training=*/true);
      std::copy(g, g + m, fake.begin());
      // D step: real → 1, fake (detached) → 0.
      discriminator_->ZeroGrad();
      const float* dr = discriminator_->Forward(real.data(), y.data(), b, true);
      d_sum += model::BinaryCrossEntropyWithLogits(dr, ones.data(), b, dd.data());
      discriminator_->Backward(dd.data());
      const float* df_logit = discriminator_->Forward(fake.data(), y.data(), b, true);
      d_sum += model::BinaryCrossEntropyWithLogits(df_logit, zeros.data(), b, dd.data());
      discriminator_->Backward(dd.data());
      opt_d_->Step(d_params);
      // G step: D(G(z, y)) → 1, through the updated D.
      generator_->ZeroGrad();
      const float* dg = discriminator_->Forward(fake.data(), y.data(), b, true);
      g_sum += model::BinaryCrossEntropyWithLogits(dg, ones.data(), b, dd.data());
      discriminator_->Backward(dd.data(), dfake.data());
      generator_->Backward(dfake.data());
      opt_g_->Step(g_params);
      ++batches;
      out.steps += 2;
    }
    out.d_loss = d_sum / std::max<int64_t>(batches, 1);
    out.g_loss = g_sum / std::max<int64_t>(batches, 1);
  }

  // Upload: Δ for C and G only.
  out.delta = SharedParametersProto(*classifier_, *generator_);
  for (int i = 0; i < out.delta.parameters_size(); ++i) {
    v1::TensorProto* t = out.delta.mutable_parameters(i);
    const v1::TensorProto& r = received.parameters(i);
    for (int j = 0; j < t->values_size(); ++j) t->set_values(j, t->values(j) - r.values(j));
  }
  out.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

absl::StatusOr<double> FedCgClient::Evaluate(const v1::ModelProto& global,
                                             const data::Dataset& data) {
  FEDGE_RETURN_IF_ERROR(CheckData(data));
  FEDGE_RETURN_IF_ERROR(SetParametersByName(classifier_->parameters(), global, false));
  const int in = static_cast<int>(data.feature_size());
  int64_t correct = 0;
  constexpr int kChunk = 256;
  for (int begin = 0; begin < data.num_examples; begin += kChunk) {
    const int b = std::min(kChunk, data.num_examples - begin);
    const float* f = extractor_->Forward(data.features.data() + static_cast<size_t>(begin) * in,
                                         b, model::ComputeMode::kFp32, false);
    const float* logits = classifier_->Forward(f, b, model::ComputeMode::kFp32, false);
    correct += model::CountCorrect(logits, data.labels.data() + begin, b, shape_.num_classes);
  }
  return static_cast<double>(correct) / data.num_examples;
}

FedCgClientOptions FedCgOptionsFromTask(const v1::TaskHeader& task) {
  FedCgClientOptions o;
  const v1::LocalTraining& t = task.training();
  const v1::FedCgParams& p = task.fed_cg();
  if (t.has_epochs()) o.local_epochs = t.epochs();
  if (t.has_batch_size()) o.batch_size = t.batch_size();
  if (t.has_learning_rate()) o.learning_rate = static_cast<float>(t.learning_rate());
  o.weight_decay = static_cast<float>(t.weight_decay());
  if (p.has_gan_epochs()) o.gan_epochs = p.gan_epochs();
  if (p.has_gan_learning_rate()) o.gan_learning_rate = static_cast<float>(p.gan_learning_rate());
  if (p.has_gamma_ramp_rounds()) o.gamma_ramp_rounds = p.gamma_ramp_rounds();
  return o;
}

absl::StatusOr<v1::ModelProto> FedCgSharedModel(const model::FedCgShape& shape) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> c, model::CreateFedCgClassifier(shape));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::ConditionalNet> g,
                         model::CreateFedCgGenerator(shape));
  return SharedParametersProto(*c, *g);
}

absl::StatusOr<v1::ModelProto> FedCgTaskSharedModel(const v1::TaskHeader& task) {
  const v1::FedCgParams& f = task.fed_cg();
  const model::FedCgShape shape = model::FedCgShapeFromParams(f);
  if (shape.image_size < 16 || shape.image_size > 256 || shape.channels < 1 ||
      shape.channels > 4 || shape.num_classes < 2 || shape.num_classes > 1000 ||
      shape.noise_dim < 1 || shape.noise_dim > 4096 || shape.embed_dim < 1 ||
      shape.embed_dim > 4096) {
    return absl::InvalidArgumentError(
        "FedCG task: the networks' shape is out of bounds (image_size [16, 256], channels "
        "[1, 4], num_classes [2, 1000], noise_dim and embed_dim [1, 4096])");
  }
  if (f.gan_architecture() != v1::FEDCG_GAN_DENSE &&
      f.gan_architecture() != v1::FEDCG_GAN_CONV_BATCHNORM) {
    return absl::InvalidArgumentError(
        absl::StrCat("FedCG task: unknown gan_architecture ", f.gan_architecture(),
                     " (a newer coordinator?)"));
  }
  if (task.has_teacher_spec()) {
    return absl::InvalidArgumentError("FedCG task: it carries a teacher; FedCG has none");
  }
  return FedCgSharedModel(shape);
}

namespace {

struct NetFootprint {
  int64_t floats = 0;     // parameter values
  int64_t trainable = 0;  // of which the optimizer steps (Adam: two moments each)
  int64_t batch_floats = 0;
};

// What one of FedCG's networks holds in a training step at `batch` (see
// EstimateFedCgRoundMemoryBytes); `conditioned_input`: a ConditionalNet's [x ‖ embed] width
// (its body's input), which it keeps with its gradient.
NetFootprint Footprint(model::Sequential& net, std::vector<model::Parameter*> params,
                       int64_t batch, int64_t conditioned_input) {
  NetFootprint f;
  for (const model::Parameter* p : params) {
    f.floats += p->size();
    if (p->trainable) f.trainable += p->size();
  }
  int64_t acts = net.input_size(), widest = net.input_size(), scratch = 0;
  const v1::ModelSpec& spec = net.spec();
  for (int i = 0; i < net.num_layers(); ++i) {
    const model::Layer& l = net.layer(i);
    acts += l.output_size();
    widest = std::max<int64_t>(widest, l.output_size());
    if (i >= spec.layers_size()) continue;
    const v1::LayerSpec& ls = spec.layers(i);
    if (ls.has_conv2d()) {
      const auto& c = ls.conv2d();
      scratch += model::Conv2dScratchFloats(c.kernel_size(), c.in_channels(), c.out_channels(),
                                            l.output_shape()[0], l.output_shape()[1], batch);
    } else if (ls.has_conv_transpose2d()) {
      const auto& c = ls.conv_transpose2d();
      scratch += batch * l.input_shape()[0] * l.input_shape()[1] * c.kernel_size() *
                 c.kernel_size() * c.out_channels();
    } else if (ls.has_batch_norm2d()) {
      scratch += batch * l.output_size();
    }
  }
  f.batch_floats = batch * (acts + 2 * widest + 2 * conditioned_input) + scratch;
  return f;
}

}  // namespace

absl::StatusOr<int64_t> EstimateFedCgRoundMemoryBytes(const model::FedCgShape& shape,
                                                      int batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FedCG: batch_size must be >= 1, got ", batch_size));
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> e, model::CreateFedCgExtractor(shape));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> c, model::CreateFedCgClassifier(shape));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::ConditionalNet> g,
                         model::CreateFedCgGenerator(shape));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::ConditionalNet> d,
                         model::CreateFedCgDiscriminator(shape));
  const int64_t b = batch_size;
  const NetFootprint parts[] = {
      Footprint(*e, e->parameters(), b, 0),
      Footprint(*c, c->parameters(), b, 0),
      Footprint(g->body(), g->parameters(), b, g->body().input_size()),
      Footprint(d->body(), d->parameters(), b, d->body().input_size()),
  };
  int64_t floats = 0;
  for (const NetFootprint& f : parts) floats += 2 * f.floats + 2 * f.trainable + f.batch_floats;
  floats += 4 * (parts[1].floats + parts[2].floats);  // C and G: global, received, Δ, upload
  return 4 * floats;
}

absl::StatusOr<data::Dataset> FedCgInputs(const data::Dataset& raw,
                                          const model::FedCgShape& shape) {
  if (raw.is_u8()) {  // FedCG resizes and rescales the images: it works on floats
    data::Dataset floats = raw;
    data::ToFloat(floats);
    return FedCgInputs(floats, shape);
  }
  if (raw.shape.size() == 1 && shape.channels == 1) {
    // Flat square grey images (e.g. [784]) are [1, side, side].
    const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(raw.shape[0]))));
    if (side > 0 && side * side == raw.shape[0]) {
      data::Dataset square = raw;
      square.shape = {1, side, side};
      return FedCgInputs(square, shape);
    }
  }
  if (raw.shape.size() != 3 || raw.shape[0] != shape.channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FedCG: local examples must be images [", shape.channels,
        ", rows, cols] (channels first, pixels in [0, 1]); got [", absl::StrJoin(raw.shape, ", "),
        "]"));
  }
  FEDGE_ASSIGN_OR_RETURN(data::Dataset out, data::ResizeImages(raw, shape.image_size));
  data::ScaleToSymmetricRange(out);
  FEDGE_RETURN_IF_ERROR(data::ToChannelsLast(out));
  return out;
}

FedCgDeviceData FedCgHoldOut(data::Dataset inputs, double fraction, uint64_t seed) {
  FedCgDeviceData out;
  const int n = inputs.num_examples;
  const int held = fraction > 0 && n > 1
                       ? std::min(n - 1, static_cast<int>(std::ceil(fraction * n)))
                       : 0;
  if (held == 0) {
    out.train = std::move(inputs);
    return out;
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  base::Rng rng(seed, 0x686f6c64);  // "hold"
  rng.Shuffle(order);
  std::vector<int> train(order.begin(), order.end() - held), eval(order.end() - held, order.end());
  std::sort(train.begin(), train.end());
  std::sort(eval.begin(), eval.end());
  out.train = data::Subset(inputs, train);
  out.eval = data::Subset(inputs, eval);
  return out;
}

absl::StatusOr<LocalUpdate> FedCgDeviceRound(FedCgClient& client, const v1::ModelProto& global,
                                             const FedCgDeviceData& data, int round,
                                             const std::function<bool()>& cancelled) {
  LocalUpdate u;
  if (data.eval.num_examples > 0) {
    FEDGE_ASSIGN_OR_RETURN(u.eval_accuracy, client.Evaluate(global, data.eval));
    u.eval_examples = data.eval.num_examples;
  }
  FEDGE_ASSIGN_OR_RETURN(FedCgUpdate r, client.TrainRound(global, data.train, round, cancelled));
  u.delta = std::move(r.delta);
  u.num_examples = r.num_examples;
  u.train_loss = r.classifier_loss;
  u.train_accuracy = r.train_accuracy;
  u.steps = r.steps;
  u.seconds = r.seconds;
  double sq = 0;
  for (const v1::TensorProto& p : u.delta.parameters()) {
    for (float v : p.values()) sq += static_cast<double>(v) * v;
  }
  u.delta_norm = std::sqrt(sq);
  return u;
}

}  // namespace fedge::client
