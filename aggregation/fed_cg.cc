#include "aggregation/fed_cg.h"

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "aggregation/state_codec.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "model/conditional_net.h"
#include "model/loss.h"
#include "model/optimizer.h"
#include "model/sequential.h"

namespace fedge::aggregation {
namespace {

// FEDGECG1: rounds. FEDGECG2: rounds, then the distillation Adam's step count and moments.
constexpr absl::string_view kMagicV1 = "FEDGECG1";
constexpr absl::string_view kMagic = "FEDGECG2";

// One C∘G pair as networks.
struct Pair {
  std::unique_ptr<model::Sequential> c;
  std::unique_ptr<model::ConditionalNet> g;

  std::vector<model::Parameter*> parameters() {
    std::vector<model::Parameter*> ps = c->parameters();
    for (model::Parameter* p : g->parameters()) ps.push_back(p);
    return ps;
  }
  // logits [b × classes] of C(G(z, y)).
  const float* Forward(const float* z, const int32_t* y, int b, bool training) {
    const float* f = g->Forward(z, y, b, training);
    return c->Forward(f, b, model::ComputeMode::kFp32, training);
  }
};

absl::StatusOr<Pair> MakePair(const model::FedCgShape& shape) {
  Pair p;
  FEDGE_ASSIGN_OR_RETURN(p.c, model::CreateFedCgClassifier(shape));
  FEDGE_ASSIGN_OR_RETURN(p.g, model::CreateFedCgGenerator(shape));
  return p;
}

absl::flat_hash_map<std::string, const Tensor*> ByName(const std::vector<Tensor>& ts) {
  absl::flat_hash_map<std::string, const Tensor*> m;
  for (const Tensor& t : ts) m.emplace(t.name, &t);
  return m;
}

// Sets every parameter of `pair` from base[name] (+ delta[name] when delta is given).
absl::Status Load(Pair& pair, const ModelWeights& base, const std::vector<Tensor>* delta,
                  absl::string_view who) {
  const auto b = ByName(base);
  absl::flat_hash_map<std::string, const Tensor*> d;
  if (delta != nullptr) d = ByName(*delta);
  for (model::Parameter* p : pair.parameters()) {
    auto it = b.find(p->name);
    if (it == b.end() || static_cast<int64_t>(it->second->values.size()) != p->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FedCG: model tensor ", p->name, " missing or misshapen"));
    }
    std::copy(it->second->values.begin(), it->second->values.end(), p->value.begin());
    if (delta != nullptr) {
      auto jt = d.find(p->name);
      if (jt == d.end() || jt->second->values.size() != it->second->values.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("FedCG: update from ", who, " lacks tensor ", p->name,
                         " or has it misshapen"));
      }
      if (jt->second->held.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "FedCG: update from ", who, " is a sub-model update (", p->name,
            " has a held mask); FedCG distills whole classifier/generator pairs"));
      }
      const float* dv = jt->second->values.data();
      for (int64_t i = 0; i < p->size(); ++i) p->value[i] += dv[i];
    }
    ++p->version;
  }
  return absl::OkStatus();
}

absl::Status Store(Pair& pair, ModelWeights* model) {
  absl::flat_hash_map<std::string, Tensor*> m;
  for (Tensor& t : *model) m.emplace(t.name, &t);
  for (model::Parameter* p : pair.parameters()) {
    auto it = m.find(p->name);
    if (it == m.end()) return absl::InternalError("FedCG: model lost a tensor");
    it->second->values.assign(p->value.begin(), p->value.end());
  }
  return absl::OkStatus();
}

struct Teachers {
  std::vector<Pair> pairs;
  std::vector<float> weights;  // n_i / Σ n
};

absl::StatusOr<Teachers> MakeTeachers(const model::FedCgShape& shape,
                                      absl::Span<const Update* const> updates,
                                      const ModelWeights& broadcast) {
  if (updates.empty()) return absl::InvalidArgumentError("FedCG: no client updates to distill");
  Teachers t;
  double total = 0;
  for (const Update* u : updates) {
    if (!(u->weight > 0) || !std::isfinite(u->weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("FedCG: update from ", u->client_id, " has weight ", u->weight));
    }
    total += u->weight;
  }
  for (const Update* u : updates) {
    FEDGE_ASSIGN_OR_RETURN(Pair p, MakePair(shape));
    FEDGE_RETURN_IF_ERROR(Load(p, broadcast, &u->tensors, u->client_id));
    t.pairs.push_back(std::move(p));
    t.weights.push_back(static_cast<float>(u->weight / total));
  }
  return t;
}

// Example-weighted mean of the teachers' logits.
void TeacherLogits(Teachers& t, const float* z, const int32_t* y, int b, int classes,
                   float* out) {
  std::fill(out, out + static_cast<size_t>(b) * classes, 0.0f);
  for (size_t i = 0; i < t.pairs.size(); ++i) {
    const float* l = t.pairs[i].Forward(z, y, b, false);
    for (int j = 0; j < b * classes; ++j) out[j] += t.weights[i] * l[j];
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<FedCg>> FedCg::Create(const FedCgOptions& options) {
  if (options.distill_steps < 0 || options.distill_steps > 10'000'000 ||
      options.distill_batch < 1 || options.distill_batch > 65536 ||
      !(options.learning_rate > 0) || !std::isfinite(options.learning_rate) ||
      !(options.weight_decay >= 0) || !std::isfinite(options.weight_decay)) {
    return absl::InvalidArgumentError(
        "FedCG: distill_steps must be in [0, 1e7], distill_batch in [1, 65536], "
        "learning_rate > 0, weight_decay >= 0");
  }
  std::unique_ptr<FedCg> s(new FedCg(options));
  FEDGE_ASSIGN_OR_RETURN(s->fedavg_, FedAvg::Create());
  return s;
}

absl::StatusOr<ModelWeights> FedCg::InitialModel(const model::FedCgShape& shape,
                                                 uint64_t seed) {
  FEDGE_ASSIGN_OR_RETURN(Pair p, MakePair(shape));
  p.c->InitParameters(seed * 2 + 1);
  p.g->InitParameters(seed * 2 + 2);
  ModelWeights w;
  for (model::Parameter* q : p.parameters()) {
    Tensor t;
    t.name = q->name;
    t.shape.assign(q->shape.begin(), q->shape.end());
    t.values = q->value;
    w.push_back(std::move(t));
  }
  return w;
}

absl::Status FedCg::Apply(const ModelDelta& delta, ModelWeights* model) {
  ModelWeights before = *model;
  FEDGE_RETURN_IF_ERROR(fedavg_->Apply(delta, model));
  broadcast_ = std::move(before);
  have_broadcast_ = true;
  return absl::OkStatus();
}

absl::StatusOr<double> FedCg::DistillationLoss(absl::Span<const Update* const> client_updates,
                                               const ModelWeights& model,
                                               const std::vector<int32_t>& y,
                                               const std::vector<float>& z) {
  if (!have_broadcast_) {
    return absl::FailedPreconditionError("FedCG: no Apply before the distillation");
  }
  const model::FedCgShape& shape = options_.shape;
  const int b = static_cast<int>(y.size());
  if (b == 0 || z.size() != static_cast<size_t>(b) * shape.noise_dim) {
    return absl::InvalidArgumentError("FedCG: z must be [batch × noise_dim], batch > 0");
  }
  for (int32_t v : y) {
    if (v < 0 || v >= shape.num_classes) return absl::InvalidArgumentError("FedCG: bad label");
  }
  FEDGE_ASSIGN_OR_RETURN(Teachers teachers, MakeTeachers(shape, client_updates, broadcast_));
  FEDGE_ASSIGN_OR_RETURN(Pair student, MakePair(shape));
  FEDGE_RETURN_IF_ERROR(Load(student, model, nullptr, "server"));
  std::vector<float> t(static_cast<size_t>(b) * shape.num_classes);
  TeacherLogits(teachers, z.data(), y.data(), b, shape.num_classes, t.data());
  const float* s = student.Forward(z.data(), y.data(), b, false);
  return model::DistillationLoss(s, t.data(), y.data(), b, shape.num_classes, 1.0f, 1.0f,
                                 nullptr);
}

absl::Status FedCg::ServerTrainingStep(absl::Span<const Update* const> client_updates,
                                       ModelWeights* model) {
  const auto start = std::chrono::steady_clock::now();
  if (!have_broadcast_) {
    return absl::FailedPreconditionError("FedCG: ServerTrainingStep without an Apply first");
  }
  const model::FedCgShape& shape = options_.shape;
  FEDGE_ASSIGN_OR_RETURN(Teachers teachers, MakeTeachers(shape, client_updates, broadcast_));
  FEDGE_ASSIGN_OR_RETURN(Pair student, MakePair(shape));
  FEDGE_RETURN_IF_ERROR(Load(student, *model, nullptr, "server"));
  // Every check that can refuse the round comes before the first Adam step (Store, after the
  // loop, fails only on an internal error), so a refused round leaves the moments unchanged.
  if (adam_ == nullptr || !options_.persistent_distill_optimizer) {
    FEDGE_ASSIGN_OR_RETURN(adam_, CreateDistillOptimizer());
  }
  model::Adam* adam = adam_.get();
  const std::vector<model::Parameter*> params = student.parameters();

  const int b = options_.distill_batch, k = shape.num_classes, nz = shape.noise_dim;
  const int feat = shape.feature_size();
  base::Rng rng(options_.seed, 1000 + static_cast<uint64_t>(rounds_));
  std::vector<int32_t> y(b);
  std::vector<float> z(static_cast<size_t>(b) * nz), t(static_cast<size_t>(b) * k);
  std::vector<float> dlogits(t.size()), dfeat(static_cast<size_t>(b) * feat);
  FedCgDistillReport report;
  double tail_sum = 0;
  int tail = 0;
  const int tail_from = std::max(0, options_.distill_steps - 100);
  for (int step = 0; step < options_.distill_steps; ++step) {
    for (int32_t& v : y) v = static_cast<int32_t>(rng.UniformInt(k));
    for (float& v : z) v = static_cast<float>(rng.Normal());
    TeacherLogits(teachers, z.data(), y.data(), b, k, t.data());
    student.c->ZeroGrad();
    student.g->ZeroGrad();
    const float* s = student.Forward(z.data(), y.data(), b, true);
    const double kl =
        model::DistillationLoss(s, t.data(), y.data(), b, k, 1.0f, 1.0f, dlogits.data());
    if (step == 0) report.first_kl = kl;
    if (step >= tail_from) {
      tail_sum += kl;
      ++tail;
    }
    student.c->Backward(dlogits.data(), dfeat.data());
    student.g->Backward(dfeat.data());
    adam->Step(params);
  }
  report.steps = options_.distill_steps;
  report.last_kl = tail > 0 ? tail_sum / tail : 0.0;
  // Health signal: does C_g classify G_g's features as their labels?
  constexpr int kProbe = 1000;
  std::vector<int32_t> py(kProbe);
  std::vector<float> pz(static_cast<size_t>(kProbe) * nz);
  for (int32_t& v : py) v = static_cast<int32_t>(rng.UniformInt(k));
  for (float& v : pz) v = static_cast<float>(rng.Normal());
  const float* logits = student.Forward(pz.data(), py.data(), kProbe, false);
  report.synthetic_accuracy =
      static_cast<double>(model::CountCorrect(logits, py.data(), kProbe, k)) / kProbe;
  FEDGE_RETURN_IF_ERROR(Store(student, model));
  ++rounds_;
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report_ = report;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<model::Adam>> FedCg::CreateDistillOptimizer() const {
  model::AdamOptions ao;
  ao.learning_rate = options_.learning_rate;
  ao.weight_decay = options_.weight_decay;
  return model::Adam::Create(ao);
}

absl::StatusOr<std::string> FedCg::SerializeState() const {
  internal::StateWriter w;
  w.PutBytes(kMagic.data(), kMagic.size());
  w.Put(rounds_);
  // A fresh Adam each round has nothing to carry: its moments are not written.
  const model::Adam::State empty;
  const model::Adam::State& a =
      adam_ && options_.persistent_distill_optimizer ? adam_->state() : empty;
  w.Put<int64_t>(a.step);
  w.Put<uint32_t>(static_cast<uint32_t>(a.m.size()));
  for (size_t i = 0; i < a.m.size(); ++i) {
    w.Put<uint64_t>(a.m[i].size());
    w.PutBytes(a.m[i].data(), a.m[i].size() * sizeof(float));
    w.PutBytes(a.v[i].data(), a.v[i].size() * sizeof(float));
  }
  return w.Finish();
}

absl::Status FedCg::RestoreState(absl::string_view state) {
  auto bad = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("FedCG: bad state: ", why));
  };
  const bool v1 = state.substr(0, kMagicV1.size()) == kMagicV1;
  FEDGE_ASSIGN_OR_RETURN(absl::string_view body,
                         internal::OpenState("FedCG", v1 ? kMagicV1 : kMagic, state));
  internal::StateReader r(body);
  int64_t rounds = 0;
  if (!r.Get(&rounds) || rounds < 0) return bad("no round count");
  model::Adam::State a;
  if (!v1) {
    uint32_t count;
    if (!r.Get(&a.step) || !r.Get(&count)) return bad("truncated");
    // The moments must fit this server's C and G, parameter by parameter.
    FEDGE_ASSIGN_OR_RETURN(Pair pair, MakePair(options_.shape));
    const std::vector<model::Parameter*> params = pair.parameters();
    if (count != 0 && count != params.size()) {
      return bad(absl::StrCat(count, " optimizer tensors for ", params.size(), " parameters"));
    }
    a.m.resize(count);
    a.v.resize(count);
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t size;
      if (!r.Get(&size)) return bad("truncated");
      if (size != static_cast<uint64_t>(params[i]->size())) {
        return bad(absl::StrCat("optimizer tensor ", i, " has ", size, " values, parameter ",
                                params[i]->name, " ", params[i]->size()));
      }
      a.m[i].resize(size);
      a.v[i].resize(size);
      if (!r.GetBytes(a.m[i].data(), size * sizeof(float)) ||
          !r.GetBytes(a.v[i].data(), size * sizeof(float))) {
        return bad("truncated");
      }
    }
  }
  if (r.remaining() != 0) return bad("trailing bytes");
  std::unique_ptr<model::Adam> adam;
  if (a.step != 0 || !a.m.empty()) {  // Adam refuses a step without moments and the reverse
    FEDGE_ASSIGN_OR_RETURN(adam, CreateDistillOptimizer());
    if (const absl::Status s = adam->RestoreState(std::move(a)); !s.ok()) return bad(s.message());
  }
  rounds_ = rounds;
  // A server with a fresh Adam each round has no use for checkpointed moments.
  adam_ = options_.persistent_distill_optimizer ? std::move(adam) : nullptr;
  return absl::OkStatus();
}

absl::Status FedCg::CheckUpdateTensor(absl::string_view client_id,
                                      absl::string_view name) const {
  if (absl::StartsWith(name, "C.") || absl::StartsWith(name, "G.")) return absl::OkStatus();
  const bool private_part = absl::StartsWith(name, "E.") || absl::StartsWith(name, "D.");
  return absl::InvalidArgumentError(absl::StrCat(
      "FedCg: client ", client_id, "'s update carries tensor '", name.substr(0, 64), "'",
      private_part ? ", a parameter of its private extractor E or discriminator D, which "
                     "never leave the device: refused"
                   : ": FedCG updates hold the C.* and G.* tensors only"));
}

absl::Status FedCg::CheckUpdate(const Update& update, const ModelWeights& broadcast) const {
  for (const Tensor& t : update.tensors) {
    FEDGE_RETURN_IF_ERROR(CheckUpdateTensor(update.client_id, t.name));
    if (!absl::EndsWith(t.name, ".running_var")) continue;
    for (const Tensor& base : broadcast) {
      if (base.name != t.name) continue;
      if (base.values.size() != t.values.size()) break;  // the aggregator names the shape
      for (size_t i = 0; i < t.values.size(); ++i) {
        const float v = base.values[i] + t.values[i];
        if (v >= 0) continue;  // NaN fails too
        return absl::InvalidArgumentError(absl::StrCat(
            "FedCg: client ", update.client_id, "'s update makes ", t.name, "[", i, "] ", v,
            ", a batch norm running variance below 0: refused"));
      }
      break;
    }
  }
  return absl::OkStatus();
}

void FedCg::ReportRound(const DeviceEvaluation& devices, v1::RoundMetrics* metrics) const {
  v1::FedCgRoundMetrics& f = *metrics->mutable_fed_cg();
  f.set_distill_steps(report_.steps);
  f.set_first_kl(report_.first_kl);
  f.set_last_kl(report_.last_kl);
  f.set_synthetic_accuracy(report_.synthetic_accuracy);
  f.set_distill_seconds(report_.seconds);
  f.set_clients_evaluated(devices.clients);
  f.set_eval_examples(devices.examples);
  if (devices.examples > 0) {
    f.set_client_accuracy(devices.correct / static_cast<double>(devices.examples));
  }
  f.set_evaluated_model_round(devices.model_round);
}

}  // namespace fedge::aggregation
