#include "client/local_trainer.h"

#include <cmath>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/lm_training.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

// A separable 3-class problem with 8 features.
data::Dataset MakeData(int n, uint64_t seed) {
  base::Rng rng(seed);
  data::Dataset d;
  d.num_examples = n;
  d.shape = {8};
  d.num_classes = 3;
  d.features.resize(n * 8);
  d.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    d.labels[i] = i % 3;
    for (int j = 0; j < 8; ++j) {
      d.features[i * 8 + j] =
          static_cast<float>(rng.Normal() * 0.5 + (j % 3 == d.labels[i] ? 1.5 : 0.0));
    }
  }
  return d;
}

v1::ModelProto MakeModel() {
  auto net = std::move(model::Sequential::Create(model::MlpSpec({8, 16, 3}))).value();
  net->InitParameters(3);
  return net->ToProto();
}

double Accuracy(const v1::ModelProto& m, const data::Dataset& d) {
  auto net = std::move(model::Sequential::FromProto(m)).value();
  const float* logits = net->Forward(d.features.data(), d.num_examples, model::ComputeMode::kFp32, false);
  int correct = 0;
  for (int i = 0; i < d.num_examples; ++i) {
    const float* r = logits + i * 3;
    correct += static_cast<int>(std::max_element(r, r + 3) - r) == d.labels[i];
  }
  return static_cast<double>(correct) / d.num_examples;
}

v1::ModelProto Apply(const v1::ModelProto& base, const v1::ModelProto& delta) {
  v1::ModelProto out = base;
  for (int t = 0; t < out.parameters_size(); ++t) {
    for (int i = 0; i < out.parameters(t).values_size(); ++i) {
      out.mutable_parameters(t)->set_values(
          i, out.parameters(t).values(i) + delta.parameters(t).values(i));
    }
  }
  return out;
}

TEST(LocalTrainerTest, DeltaImprovesTheReceivedModel) {
  const data::Dataset d = MakeData(300, 1);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.epochs = 3;
  o.batch_size = 32;
  o.learning_rate = 0.05f;
  for (model::ComputeMode mode : {model::ComputeMode::kFp32, model::ComputeMode::kInt8}) {
    o.mode = mode;
    auto update = TrainLocally(received, d, o);
    ASSERT_THAT(update, IsOk());
    EXPECT_EQ(update->num_examples, 300);
    EXPECT_EQ(update->steps, 3 * 10);
    EXPECT_EQ(update->delta.parameters_size(), received.parameters_size());
    EXPECT_GT(Accuracy(Apply(received, update->delta), d), 0.9);
    EXPECT_LT(Accuracy(received, d), 0.8);
  }
}

TEST(LocalTrainerTest, SameSeedSameDelta) {
  const data::Dataset d = MakeData(100, 2);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.seed = 7;
  auto a = TrainLocally(received, d, o), b = TrainLocally(received, d, o);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->delta.SerializeAsString(), b->delta.SerializeAsString());
  o.seed = 8;
  auto c = TrainLocally(received, d, o);
  EXPECT_NE(a->delta.SerializeAsString(), c->delta.SerializeAsString());
}

// A persistent optimizer carries its state across calls: Adam for 3 full-batch steps, then
// 3 more from where the first call ended, lands where one call of 6 steps does (up to the
// rounding of w0 + Δ and of the shuffled batch's sum); with a fresh Adam in the second call
// (bias correction restarted, moments lost) it lands elsewhere.
TEST(LocalTrainerTest, PersistentOptimizerCarriesItsStateAcrossCalls) {
  const data::Dataset d = MakeData(60, 9);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.optimizer = LocalTrainingOptions::Optimizer::kAdam;
  o.learning_rate = 0.01f;
  o.batch_size = 60;  // one step per epoch over all examples
  o.epochs = 6;
  auto whole = TrainLocally(received, d, o);
  ASSERT_THAT(whole, IsOk());
  const v1::ModelProto six = Apply(received, whole->delta);

  auto two_calls = [&](bool persistent) {
    auto adam = MakeLocalOptimizer(o);
    EXPECT_THAT(adam, IsOk());
    LocalTrainingOptions half = o;
    half.epochs = 3;
    if (persistent) half.persistent_optimizer = adam->get();
    auto first = TrainLocally(received, d, half);
    EXPECT_THAT(first, IsOk());
    const v1::ModelProto mid = Apply(received, first->delta);
    half.seed = 1;  // another shuffle: the full batch's gradient is the same
    auto second = TrainLocally(mid, d, half);
    EXPECT_THAT(second, IsOk());
    return Apply(mid, second->delta);
  };
  auto max_diff = [&](const v1::ModelProto& a, const v1::ModelProto& b) {
    float m = 0;
    for (int t = 0; t < a.parameters_size(); ++t) {
      for (int i = 0; i < a.parameters(t).values_size(); ++i) {
        m = std::max(m, std::fabs(a.parameters(t).values(i) - b.parameters(t).values(i)));
      }
    }
    return m;
  };
  EXPECT_LT(max_diff(two_calls(true), six), 1e-5f);
  EXPECT_GT(max_diff(two_calls(false), six), 1e-3f);
}

// FedProx's proximal term pulls the local model towards the received one: the update is
// smaller with μ > 0.
TEST(LocalTrainerTest, ProximalTermShrinksTheUpdate) {
  const data::Dataset d = MakeData(300, 3);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.epochs = 5;
  o.learning_rate = 0.05f;
  auto norm = [](const v1::ModelProto& m) {
    double s = 0;
    for (const auto& t : m.parameters()) for (float v : t.values()) s += v * v;
    return std::sqrt(s);
  };
  auto plain = TrainLocally(received, d, o);
  o.proximal_mu = 1.0f;
  auto prox = TrainLocally(received, d, o);
  ASSERT_THAT(plain, IsOk());
  ASSERT_THAT(prox, IsOk());
  EXPECT_LT(norm(prox->delta), 0.8 * norm(plain->delta));
}

TEST(LocalTrainerTest, RejectsBadInputs) {
  const data::Dataset d = MakeData(30, 4);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.epochs = 0;
  EXPECT_THAT(TrainLocally(received, d, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("epochs")));
  o = {};
  o.mode = model::ComputeMode::kInt4;
  EXPECT_THAT(TrainLocally(received, d, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("int4")));
  o = {};
  data::Dataset wrong = d;
  wrong.shape = {4};
  wrong.features.resize(30 * 4);
  EXPECT_THAT(TrainLocally(received, wrong, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("features")));
  v1::ModelProto broken = received;
  broken.mutable_parameters(0)->set_values(0, NAN);
  EXPECT_THAT(TrainLocally(broken, d, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  data::Dataset empty = d;
  empty.num_examples = 0;
  empty.features.clear();
  empty.labels.clear();
  EXPECT_THAT(TrainLocally(received, empty, o), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no local data")));
}

}  // namespace
}  // namespace fedge::client

namespace fedge::client {
namespace {

TEST(LocalTrainerTest, OptionsFromTaskAndStepLimit) {
  v1::TaskHeader task;
  task.mutable_training()->set_epochs(3);
  task.mutable_training()->set_batch_size(10);
  task.mutable_training()->set_learning_rate(0.2);
  task.mutable_training()->set_momentum(0.5);
  task.mutable_training()->set_nesterov(true);
  task.mutable_training()->set_max_steps(4);
  task.mutable_training()->set_compute_mode(v1::COMPUTE_MODE_INT8);
  task.set_fedprox_mu(0.1);
  auto o = OptionsFromTask(task, 9);
  ASSERT_THAT(o, fedge::testing::IsOk());
  EXPECT_EQ(o->epochs, 3);
  EXPECT_EQ(o->batch_size, 10);
  EXPECT_FLOAT_EQ(o->learning_rate, 0.2f);
  EXPECT_TRUE(o->nesterov);
  EXPECT_EQ(o->mode, model::ComputeMode::kInt8);
  EXPECT_FLOAT_EQ(o->proximal_mu, 0.1f);
  EXPECT_EQ(o->seed, 9u);
  EXPECT_FLOAT_EQ(o->adam_beta1, 0.9f);  // unset: Adam's defaults
  EXPECT_FLOAT_EQ(o->adam_beta2, 0.999f);
  EXPECT_FLOAT_EQ(o->adam_epsilon, 1e-8f);
  {
    // The job's Adam settings reach the optimizer: another β1 trains to another model.
    v1::TaskHeader adam = task;
    adam.mutable_training()->set_optimizer(v1::OPTIMIZER_KIND_ADAM);
    adam.mutable_training()->set_compute_mode(v1::COMPUTE_MODE_FP32);
    auto a = OptionsFromTask(adam, 9);
    adam.mutable_training()->set_adam_beta1(0.5);
    adam.mutable_training()->set_adam_beta2(0.99);
    adam.mutable_training()->set_adam_epsilon(1e-3);
    auto b = OptionsFromTask(adam, 9);
    ASSERT_THAT(a, fedge::testing::IsOk());
    ASSERT_THAT(b, fedge::testing::IsOk());
    EXPECT_FLOAT_EQ(b->adam_beta1, 0.5f);
    EXPECT_FLOAT_EQ(b->adam_beta2, 0.99f);
    EXPECT_FLOAT_EQ(b->adam_epsilon, 1e-3f);
    auto ua = TrainLocally(MakeModel(), MakeData(100, 5), *a);
    auto ub = TrainLocally(MakeModel(), MakeData(100, 5), *b);
    ASSERT_THAT(ua, fedge::testing::IsOk());
    ASSERT_THAT(ub, fedge::testing::IsOk());
    EXPECT_NE(ua->delta.parameters(0).values(0), ub->delta.parameters(0).values(0));
  }
  auto update = TrainLocally(MakeModel(), MakeData(100, 5), *o);
  ASSERT_THAT(update, fedge::testing::IsOk());
  EXPECT_EQ(update->steps, 4);  // max_steps stops the 3 × 10 steps early

  task.mutable_training()->set_compute_mode(v1::COMPUTE_MODE_INT4);
  EXPECT_THAT(OptionsFromTask(task, 0),
              fedge::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("INT4")));
}

}  // namespace
}  // namespace fedge::client

namespace fedge::client {
namespace {

TEST(LocalTrainerTest, AcceptsEveryEpochCountAJobMayAskFor) {
  v1::TaskHeader task;
  task.mutable_training()->set_epochs(10000);  // server::kMaxLocalEpochs
  EXPECT_THAT(OptionsFromTask(task, 0), fedge::testing::IsOk());
  task.mutable_training()->set_epochs(10001);
  EXPECT_THAT(OptionsFromTask(task, 0), fedge::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                                 ::testing::HasSubstr("epochs")));
}

TEST(LocalTrainerTest, CancelledStopsTraining) {
  LocalTrainingOptions o;
  o.epochs = 5;
  o.batch_size = 8;
  int polls = 0;
  o.cancelled = [&polls] { return ++polls > 3; };
  EXPECT_THAT(TrainLocally(MakeModel(), MakeData(64, 1), o),
              fedge::testing::StatusIs(absl::StatusCode::kCancelled,
                                       ::testing::HasSubstr("after 3 steps")));
}

}  // namespace
}  // namespace fedge::client

namespace fedge::client {
namespace {

double Norm(const v1::ModelProto& m) {
  double s = 0;
  for (const auto& t : m.parameters()) {
    for (float v : t.values()) s += static_cast<double>(v) * v;
  }
  return std::sqrt(s);
}

// With λ = 1 the loss is T²·KL(teacher ‖ student) only: a student that is its own teacher
// (same weights, fp32 both) has zero gradient at every step and does not move, while the
// same student trained on the labels does. An int8 teacher differs a little.
TEST(LocalTrainerTest, DistillingFromItselfInFp32LeavesTheModelUnchanged) {
  const data::Dataset d = MakeData(96, 6);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.learning_rate = 0.1f;
  auto plain = TrainLocally(received, d, o);
  ASSERT_THAT(plain, IsOk());
  EXPECT_GT(Norm(plain->delta), 0.1);

  o.teacher = &received;
  o.kd_weight = 1.0f;
  o.kd_temperature = 3.0f;
  o.teacher_mode = model::ComputeMode::kFp32;
  auto self = TrainLocally(received, d, o);
  ASSERT_THAT(self, IsOk());
  EXPECT_EQ(self->steps, plain->steps);
  EXPECT_EQ(Norm(self->delta), 0.0);
  EXPECT_NEAR(self->train_loss, 0.0, 1e-6);

  o.teacher_mode = model::ComputeMode::kInt8;
  auto int8 = TrainLocally(received, d, o);
  ASSERT_THAT(int8, IsOk());
  EXPECT_GT(Norm(int8->delta), 0.0);  // the teacher really ran in int8...
  EXPECT_LT(Norm(int8->delta), 0.2 * Norm(plain->delta));  // ...close to the fp32 model
}

// λ = 1 ignores the labels: a student trained on scrambled labels still learns the task
// from an accurate teacher (run in int4), and does not without it.
TEST(LocalTrainerTest, DistillationTeachesTheTeachersFunctionWithoutLabels) {
  const data::Dataset d = MakeData(300, 7);
  const v1::ModelProto received = MakeModel();
  LocalTrainingOptions t;
  t.epochs = 5;
  t.learning_rate = 0.05f;
  auto teacher_update = TrainLocally(received, d, t);
  ASSERT_THAT(teacher_update, IsOk());
  const v1::ModelProto teacher = Apply(received, teacher_update->delta);
  ASSERT_GT(Accuracy(teacher, d), 0.9);

  data::Dataset scrambled = d;
  for (int i = 0; i < scrambled.num_examples; ++i) scrambled.labels[i] = (d.labels[i] + 1) % 3;
  LocalTrainingOptions o;
  o.epochs = 5;
  o.learning_rate = 0.05f;
  auto wrong = TrainLocally(received, scrambled, o);
  ASSERT_THAT(wrong, IsOk());
  EXPECT_LT(Accuracy(Apply(received, wrong->delta), d), 0.2);

  o.teacher = &teacher;
  o.teacher_mode = model::ComputeMode::kInt4;
  o.kd_weight = 1.0f;
  o.kd_temperature = 2.0f;
  auto kd = TrainLocally(received, scrambled, o);
  ASSERT_THAT(kd, IsOk());
  EXPECT_GT(Accuracy(Apply(received, kd->delta), d), 0.85);
  // λ = 0 turns the teacher off: the same as no teacher at all.
  o.kd_weight = 0.0f;
  auto off = TrainLocally(received, scrambled, o);
  ASSERT_THAT(off, IsOk());
  EXPECT_EQ(off->delta.SerializeAsString(), wrong->delta.SerializeAsString());
}

TEST(LocalTrainerTest, RejectsATeacherThatDoesNotFitAndBadDistillationOptions) {
  const data::Dataset d = MakeData(30, 8);
  const v1::ModelProto received = MakeModel();
  auto other = std::move(model::Sequential::Create(model::MlpSpec({8, 16, 4}))).value();
  other->InitParameters(1);
  const v1::ModelProto four_classes = other->ToProto();
  LocalTrainingOptions o;
  o.teacher = &four_classes;
  o.kd_weight = 0.5f;
  EXPECT_THAT(TrainLocally(received, d, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("teacher takes 8 inputs and gives 4 outputs; the model takes 8 "
                                 "and gives 3")));
  v1::ModelProto broken = received;
  broken.mutable_parameters(1)->set_values(0, NAN);
  o.teacher = &broken;
  EXPECT_THAT(TrainLocally(received, d, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("teacher is invalid")));
  o.teacher = &received;
  o.kd_weight = 1.5f;
  EXPECT_THAT(TrainLocally(received, d, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kd_weight")));
  o.kd_weight = 0.5f;
  o.kd_temperature = 0.0f;
  EXPECT_THAT(TrainLocally(received, d, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kd_temperature")));
}

TEST(LocalTrainerTest, OptionsFromTaskReadsDistillation) {
  v1::TaskHeader task;
  auto plain = OptionsFromTask(task, 0);
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->kd_weight, 0.0f);
  EXPECT_EQ(plain->kd_temperature, 2.0f);
  EXPECT_EQ(plain->teacher_mode, model::ComputeMode::kInt8);
  EXPECT_EQ(plain->teacher, nullptr);

  task.mutable_distillation()->set_weight(0.3);
  task.mutable_distillation()->set_temperature(4);
  task.mutable_distillation()->set_teacher_compute_mode(v1::COMPUTE_MODE_INT4);
  auto o = OptionsFromTask(task, 0);
  ASSERT_THAT(o, IsOk());
  EXPECT_FLOAT_EQ(o->kd_weight, 0.3f);
  EXPECT_FLOAT_EQ(o->kd_temperature, 4.0f);
  EXPECT_EQ(o->teacher_mode, model::ComputeMode::kInt4);
  task.mutable_distillation()->set_teacher_compute_mode(v1::COMPUTE_MODE_FP32);
  EXPECT_EQ(OptionsFromTask(task, 0)->teacher_mode, model::ComputeMode::kFp32);

  task.mutable_distillation()->set_weight(2);
  EXPECT_THAT(OptionsFromTask(task, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kd_weight")));
  task.mutable_distillation()->set_weight(0.5);
  task.mutable_distillation()->set_temperature(-1);
  EXPECT_THAT(OptionsFromTask(task, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kd_temperature")));
}

// A small language model with adapters, and a device's text: a bigram chain.
std::unique_ptr<model::TransformerLM> SmallLora(uint64_t seed) {
  model::TransformerConfig c;
  c.vocab_size = 23;
  c.dim = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.ffn_dim = 16;
  c.context = 16;
  auto m = model::TransformerLM::Create(c).value();
  m->InitParameters(seed);
  // A frozen tied embedding of InitParameters' scale (0.02) keeps every logit within ±0.3:
  // give the base one that lets the adapters express a sharp next-token distribution.
  for (float& v : m->FindParameter("tok_emb.weight")->value) v *= 50.0f;
  model::LoraConfig lora;
  lora.rank = 4;
  EXPECT_TRUE(m->AddLora(lora, seed + 1).ok());
  return m;
}

data::TokenWindows DeviceText(int n) {
  base::Rng rng(5);
  std::vector<int32_t> next(23 * 2);
  for (auto& v : next) v = static_cast<int32_t>(rng.UniformInt(23));
  std::vector<int32_t> s(n);
  int32_t t = 0;
  for (auto& v : s) v = t = next[t * 2 + static_cast<int>(rng.UniformInt(2))];
  return data::TokenWindows::Create(s, 16).value();
}

TEST(LoraLocalTrainerTest, TrainsTheAdaptersAndReturnsTheirDelta) {
  auto model = SmallLora(1);
  const v1::ModelProto received = model->AdaptersToProto();
  const data::TokenWindows windows = DeviceText(2000);
  LocalTrainingOptions o;
  o.optimizer = LocalTrainingOptions::Optimizer::kAdam;
  o.learning_rate = 1e-2f;
  o.batch_size = 8;
  o.epochs = 4;
  o.seed = 7;
  auto u = TrainLanguageModelLocally(*model, received, windows, o);
  ASSERT_THAT(u, IsOk());
  EXPECT_EQ(u->num_examples, windows.num_windows() * 16);
  EXPECT_EQ(u->steps, 4 * ((windows.num_windows() + 7) / 8));
  EXPECT_EQ(u->delta.parameters_size(), received.parameters_size());
  EXPECT_GT(u->delta_norm, 0.0);
  // received + Δ beats received on the device's text.
  auto before = SmallLora(1);
  ASSERT_TRUE(before->SetAdapters(received).ok());
  const double loss0 = model::EvaluateLanguageModel(*before, windows).loss;
  v1::ModelProto trained = received;
  for (int i = 0; i < trained.parameters_size(); ++i) {
    auto* t = trained.mutable_parameters(i);
    for (int j = 0; j < t->values_size(); ++j) {
      t->set_values(j, t->values(j) + u->delta.parameters(i).values(j));
    }
  }
  ASSERT_TRUE(before->SetAdapters(trained).ok());
  const double loss1 = model::EvaluateLanguageModel(*before, windows).loss;
  EXPECT_LT(loss1, loss0 - 0.3);
  EXPECT_NEAR(u->train_loss, loss1, 0.5);

  // The same seed gives the same Δ; clipping bounds it.
  auto again = SmallLora(1);
  auto u2 = TrainLanguageModelLocally(*again, received, windows, o);
  ASSERT_THAT(u2, IsOk());
  EXPECT_EQ(u2->delta.parameters(3).values(5), u->delta.parameters(3).values(5));
  o.clip_norm = 0.01;
  auto clipped = TrainLanguageModelLocally(*again, received, windows, o);
  ASSERT_THAT(clipped, IsOk());
  double ss = 0;
  for (const auto& t : clipped->delta.parameters()) {
    for (float v : t.values()) ss += static_cast<double>(v) * v;
  }
  EXPECT_LE(std::sqrt(ss), 0.01 * (1 + 1e-5));
  EXPECT_GT(clipped->delta_norm, 0.01);
}

TEST(LoraLocalTrainerTest, RejectsWhatItCannotTrain) {
  auto model = SmallLora(2);
  const v1::ModelProto received = model->AdaptersToProto();
  LocalTrainingOptions o;
  o.mode = model::ComputeMode::kInt8;
  EXPECT_THAT(TrainLanguageModelLocally(*model, received, DeviceText(200), o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = LocalTrainingOptions();
  v1::ModelProto wrong = received;
  wrong.mutable_parameters(0)->add_values(1.0f);
  EXPECT_THAT(TrainLanguageModelLocally(*model, wrong, DeviceText(200), o),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("adapters")));
  o.max_steps = 2;
  o.cancelled = [] { return true; };
  EXPECT_THAT(TrainLanguageModelLocally(*model, received, DeviceText(200), o),
              StatusIs(absl::StatusCode::kCancelled));
  // A model without adapters trains every parameter: adapters are not what it takes.
  auto plain = model::TransformerLM::Create(model->config()).value();
  EXPECT_THAT(TrainLanguageModelLocally(*plain, received, DeviceText(200), LocalTrainingOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("parameters")));
}

// Full-parameter fine-tuning: every parameter trains and Δ covers them all, the trainer's
// Δ being exactly what the model moved.
TEST(LoraLocalTrainerTest, AModelWithoutAdaptersTrainsEveryParameter) {
  auto model = model::TransformerLM::Create(SmallLora(2)->config()).value();
  model->InitParameters(4);
  const v1::ModelProto received = model->ToProto();
  LocalTrainingOptions o;
  o.optimizer = LocalTrainingOptions::Optimizer::kAdam;
  o.learning_rate = 1e-2f;
  o.batch_size = 4;
  o.epochs = 3;
  o.seed = 5;
  auto u = TrainLanguageModelLocally(*model, received, DeviceText(200), o);
  ASSERT_THAT(u.status(), IsOk());
  ASSERT_EQ(u->delta.parameters_size(), received.parameters_size());
  auto again = model::TransformerLM::Create(model->config()).value();
  ASSERT_THAT(again->SetParameters(received), IsOk());
  for (int i = 0; i < received.parameters_size(); ++i) {
    const v1::TensorProto& d = u->delta.parameters(i);
    EXPECT_EQ(d.name(), received.parameters(i).name());
    double norm = 0;
    for (float v : d.values()) norm += static_cast<double>(v) * v;
    EXPECT_GT(norm, 0.0) << d.name();
  }
  // The received model plus Δ scores the text better than the received model.
  v1::ModelProto trained = received;
  for (int i = 0; i < trained.parameters_size(); ++i) {
    for (int j = 0; j < trained.parameters(i).values_size(); ++j) {
      trained.mutable_parameters(i)->set_values(
          j, trained.parameters(i).values(j) + u->delta.parameters(i).values(j));
    }
  }
  const data::TokenWindows text = DeviceText(200);
  const double before = model::EvaluateLanguageModel(*again, text, 4).loss;
  ASSERT_THAT(again->SetParameters(trained), IsOk());
  EXPECT_LT(model::EvaluateLanguageModel(*again, text, 4).loss, before - 0.1);
}

}  // namespace
}  // namespace fedge::client
