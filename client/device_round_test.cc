#include "client/device_round.h"

#include <cmath>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

v1::ModelProto MakeModel(const v1::ModelSpec& spec, uint64_t seed) {
  auto net = std::move(model::Sequential::Create(spec)).value();
  net->InitParameters(seed);
  return net->ToProto();
}

// A task header for `model` sent in `encoding` (what the coordinator's encoder fills in),
// and the payload.
struct SentTask {
  v1::TaskHeader header;
  std::string payload;
};

SentTask Send(const v1::ModelProto& model, v1::TensorEncoding encoding,
              const v1::ModelProto* teacher = nullptr) {
  SentTask t;
  t.header.set_job_id("job-1");
  t.header.set_round(3);
  t.header.set_task_id("job-1/3/0/dev");
  *t.header.mutable_model_spec() = model.spec();
  t.header.mutable_training()->set_epochs(1);
  t.header.mutable_training()->set_batch_size(8);
  t.header.mutable_training()->set_shuffle_seed(77);
  auto p = std::move(model::EncodeModelParameters(model, encoding)).value();
  *t.header.mutable_manifest() = p.manifest;
  t.payload = p.bytes;
  if (teacher != nullptr) {
    *t.header.mutable_teacher_spec() = teacher->spec();
    auto q = std::move(model::EncodeModelParameters(*teacher, v1::TENSOR_ENCODING_INT4_BLOCK32))
                 .value();
    *t.header.mutable_teacher_manifest() = q.manifest;
    t.payload += q.bytes;
  }
  t.header.set_total_bytes(static_cast<int64_t>(t.payload.size()));
  return t;
}

TEST(DeviceRoundTest, DecodesTheModelAsSentInEachTaskEncoding) {
  const v1::ModelProto model = MakeModel(model::MlpSpec({8, 16, 3}), 1);
  for (v1::TensorEncoding e : {v1::TENSOR_ENCODING_FLOAT32, v1::TENSOR_ENCODING_INT8_PER_CHANNEL,
                               v1::TENSOR_ENCODING_INT4_BLOCK32}) {
    SCOPED_TRACE(v1::TensorEncoding_Name(e));
    const SentTask sent = Send(model, e);
    absl::StatusOr<DeviceTask> task = AdmitTask(sent.header, {});
    ASSERT_THAT(task.status(), IsOk());
    EXPECT_EQ(task->payload_bytes, static_cast<int64_t>(sent.payload.size()));
    ASSERT_THAT(DecodeTaskPayload(sent.payload, *task), IsOk());
    // What the device trains from is what the payload says, value for value: the same
    // tensors decoded by the payload layer, within the encoding's error of the original.
    v1::ModelProto reference = model;
    ASSERT_THAT(model::DecodeModelParameters(sent.header.manifest(), sent.payload, &reference,
                                             model::DecodableEncodings()),
                IsOk());
    ASSERT_EQ(task->model.parameters_size(), model.parameters_size());
    double worst = 0;
    for (int t = 0; t < model.parameters_size(); ++t) {
      for (int i = 0; i < model.parameters(t).values_size(); ++i) {
        EXPECT_EQ(task->model.parameters(t).values(i), reference.parameters(t).values(i));
        worst = std::max<double>(worst, std::abs(task->model.parameters(t).values(i) -
                                                 model.parameters(t).values(i)));
      }
    }
    if (e == v1::TENSOR_ENCODING_FLOAT32) {
      EXPECT_EQ(worst, 0);
    } else {
      EXPECT_GT(worst, 0);  // the quantization really happened
      EXPECT_LT(worst, 0.2);
    }
  }
}

TEST(DeviceRoundTest, DecodesTheTeacherSection) {
  const v1::ModelProto model = MakeModel(model::MlpSpec({8, 4, 3}), 1);
  const v1::ModelProto teacher = MakeModel(model::MlpSpec({8, 32, 3}), 2);
  const SentTask sent = Send(model, v1::TENSOR_ENCODING_FLOAT32, &teacher);
  absl::StatusOr<DeviceTask> task = AdmitTask(sent.header, {});
  ASSERT_THAT(task.status(), IsOk());
  ASSERT_TRUE(task->teacher.has_value());
  ASSERT_THAT(DecodeTaskPayload(sent.payload, *task), IsOk());
  EXPECT_EQ(task->model.parameters(0).values(5), model.parameters(0).values(5));
  // int4 blocks: close to the teacher, not equal.
  EXPECT_NEAR(task->teacher->parameters(0).values(5), teacher.parameters(0).values(5), 0.1);
  EXPECT_THAT(DecodeTaskPayload(sent.payload.substr(1), *task),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("payload has")));
}

TEST(DeviceRoundTest, RefusesTasksItCannotTakeBeforeTheirPayload) {
  const v1::ModelProto model = MakeModel(model::MlpSpec({8, 16, 3}), 1);
  SentTask sent = Send(model, v1::TENSOR_ENCODING_FLOAT32);
  {
    v1::TaskHeader h = sent.header;
    h.set_total_bytes(h.total_bytes() + 4);
    EXPECT_THAT(AdmitTask(h, {}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("announces")));
  }
  {
    v1::TaskHeader h = sent.header;
    h.mutable_manifest()->mutable_tensors()->RemoveLast();
    EXPECT_THAT(AdmitTask(h, {}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("manifest lists")));
  }
  {
    // Stochastic rounding is for updates, not tasks.
    v1::TaskHeader h = sent.header;
    h.mutable_manifest()->mutable_tensors(0)->set_encoding(
        v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
    EXPECT_THAT(AdmitTask(h, {}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has encoding")));
  }
  {
    v1::TaskHeader h = sent.header;
    h.mutable_model_spec()->clear_layers();
    EXPECT_FALSE(AdmitTask(h, {}).ok());
  }
  // Over the memory budget: RESOURCE_EXHAUSTED, which the device declines with.
  DeviceResources tiny;
  tiny.memory_budget_bytes = 1000;
  tiny.num_examples = 100;
  tiny.example_floats = 8;
  EXPECT_THAT(AdmitTask(sent.header, tiny).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  DeviceResources roomy = tiny;
  roomy.memory_budget_bytes = int64_t{1} << 30;
  EXPECT_THAT(AdmitTask(sent.header, roomy).status(), IsOk());
}

TEST(DeviceRoundTest, SeedsFollowTheTaskTheClientAndTheRound) {
  v1::TaskHeader h;
  h.set_round(4);
  h.mutable_training()->set_shuffle_seed(99);
  const RoundSeeds a = DeviceRoundSeeds(h, "v00000001");
  // The derivation the fleet and the simulator share: Rng(shuffle_seed ^ Fnv1a(id), round).
  base::Rng rng(99 ^ base::Fnv1a("v00000001"), 4);
  EXPECT_EQ(a.shuffle, rng.NextU64());
  EXPECT_EQ(a.update_encoding, rng.NextU64());
  EXPECT_EQ(FedCgDeviceSeed(h, "v00000001"), 99 ^ base::Fnv1a("v00000001"));
  EXPECT_NE(DeviceRoundSeeds(h, "v00000002").shuffle, a.shuffle);
  h.set_round(5);
  EXPECT_NE(DeviceRoundSeeds(h, "v00000001").shuffle, a.shuffle);
  EXPECT_EQ(FedCgDeviceSeed(h, "v00000001"), 99 ^ base::Fnv1a("v00000001"));
}

TEST(DeviceRoundTest, EncodesTheUpdateWithTheHeaderTheCoordinatorRecords) {
  const v1::ModelProto model = MakeModel(model::MlpSpec({8, 16, 3}), 1);
  SentTask sent = Send(model, v1::TENSOR_ENCODING_FLOAT32);
  sent.header.set_update_encoding(v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  LocalUpdate u;
  u.delta = MakeModel(model::MlpSpec({8, 16, 3}), 9);
  u.num_examples = 120;
  u.train_loss = 0.5;
  u.train_accuracy = 0.75;
  u.steps = 15;
  u.seconds = 1.25;
  u.delta_norm = 3.5;
  absl::StatusOr<EncodedUpdate> a = EncodeUpdate(sent.header, u, "dev", 1);
  ASSERT_THAT(a.status(), IsOk());
  const v1::UpdateHeader& h = a->header;
  EXPECT_EQ(h.client_id(), "dev");
  EXPECT_EQ(h.job_id(), "job-1");
  EXPECT_EQ(h.round(), 3);
  EXPECT_EQ(h.task_id(), "job-1/3/0/dev");
  EXPECT_TRUE(h.session_token().empty());  // the transport's
  EXPECT_EQ(h.total_bytes(), static_cast<int64_t>(a->payload.size()));
  EXPECT_EQ(h.num_examples(), 120);
  EXPECT_EQ(h.metrics().train_loss(), 0.5);
  EXPECT_EQ(h.metrics().train_accuracy(), 0.75);
  EXPECT_EQ(h.metrics().steps(), 15);
  EXPECT_EQ(h.metrics().train_seconds(), 1.25);
  EXPECT_EQ(h.metrics().update_norm(), 3.5);  // adaptive clipping counts on it
  EXPECT_EQ(h.metrics().eval_examples(), 0);
  ASSERT_EQ(h.manifest().tensors_size(), u.delta.parameters_size());
  EXPECT_EQ(h.manifest().tensors(0).encoding(), v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  // Stochastic rounding follows the seed: the same seed, the same bytes.
  EXPECT_EQ(EncodeUpdate(sent.header, u, "dev", 1)->payload, a->payload);
  EXPECT_NE(EncodeUpdate(sent.header, u, "dev", 2)->payload, a->payload);
  // Unset encoding: float32.
  sent.header.clear_update_encoding();
  absl::StatusOr<EncodedUpdate> f = EncodeUpdate(sent.header, u, "dev", 1);
  ASSERT_THAT(f.status(), IsOk());
  EXPECT_EQ(f->header.manifest().tensors(0).encoding(), v1::TENSOR_ENCODING_FLOAT32);
  u.eval_examples = 30;
  u.eval_accuracy = 0.8;
  EXPECT_EQ(EncodeUpdate(sent.header, u, "dev", 1)->header.metrics().eval_examples(), 30);
}

// A Δ clipped to exactly C stays within C as sent, though stochastic rounding moves every
// value by up to a step: the coordinator refuses an update over the clip norm.
TEST(DeviceRoundTest, AClippedUpdateStaysWithinItsClipNormWhenRoundedStochastically) {
  const v1::ModelProto model = MakeModel(model::MlpSpec({8, 64, 3}), 1);
  SentTask sent = Send(model, v1::TENSOR_ENCODING_FLOAT32);
  sent.header.set_update_encoding(v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  const double clip = 0.5;
  sent.header.mutable_privacy()->set_clip_norm(clip);
  int over_before = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    LocalUpdate u;
    u.delta = MakeModel(model::MlpSpec({8, 64, 3}), 100 + seed);
    double sum = 0;
    for (const v1::TensorProto& p : u.delta.parameters()) {
      for (float v : p.values()) sum += static_cast<double>(v) * v;
    }
    const float scale = static_cast<float>(clip / std::sqrt(sum));
    for (v1::TensorProto& p : *u.delta.mutable_parameters()) {
      for (float& v : *p.mutable_values()) v *= scale;
    }
    u.num_examples = 10;
    // What plain encoding would send: often a little over C.
    auto plain = model::EncodeModelParameters(u.delta, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED,
                                              seed);
    ASSERT_THAT(plain.status(), IsOk());
    auto norm_of = [&](const v1::TensorManifest& m, const std::string& bytes) {
      v1::ModelProto out = u.delta;
      EXPECT_THAT(model::DecodeModelParameters(m, bytes, &out,
                                               {v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED}),
                  IsOk());
      double s2 = 0;
      for (const v1::TensorProto& p : out.parameters()) {
        for (float v : p.values()) s2 += static_cast<double>(v) * v;
      }
      return std::sqrt(s2);
    };
    if (norm_of(plain->manifest, plain->bytes) > clip * (1 + 1e-4)) ++over_before;
    absl::StatusOr<EncodedUpdate> e = EncodeUpdate(sent.header, u, "dev", seed);
    ASSERT_THAT(e.status(), IsOk());
    const double sent_norm = norm_of(e->header.manifest(), e->payload);
    EXPECT_LE(sent_norm, clip) << "seed " << seed;
    EXPECT_GT(sent_norm, clip * 0.99) << "seed " << seed;  // shrunk by the excess only
  }
  EXPECT_GT(over_before, 0);  // the case this guards against does happen
}

// A language-model task: a small base, rank-4 adapters on every target with the output head.
model::TransformerConfig SmallLm() {
  model::TransformerConfig c;
  c.vocab_size = 40;
  c.dim = 32;
  c.num_layers = 1;
  c.num_heads = 2;
  c.ffn_dim = 32;
  c.context = 16;
  return c;
}

SentTask SendLanguageModelTask(const v1::ModelProto& adapters, int window = 12) {
  SentTask t = Send(adapters, v1::TENSOR_ENCODING_FLOAT32);
  t.header.mutable_language_model()->mutable_lora()->set_rank(4);
  t.header.mutable_language_model()->mutable_lora()->set_alpha(8.0f);
  t.header.mutable_language_model()->mutable_lora()->set_attention(true);
  t.header.mutable_language_model()->mutable_lora()->set_mlp(true);
  t.header.mutable_language_model()->mutable_lora()->set_output(true);
  t.header.mutable_language_model()->mutable_lora()->set_base_format(
      v1::LoraSpec::BASE_FORMAT_INT4);
  t.header.mutable_language_model()->set_window(window);
  t.header.mutable_training()->set_optimizer(v1::OPTIMIZER_KIND_ADAM);
  t.header.mutable_training()->set_learning_rate(1e-2);
  t.header.mutable_training()->set_batch_size(4);
  return t;
}

std::unique_ptr<model::TransformerLM> DeviceLm(int rank) {
  auto m = model::TransformerLM::Create(SmallLm()).value();
  m->InitParameters(1);
  model::LoraConfig lora;
  lora.rank = rank;
  lora.alpha = 8.0f;
  lora.output = true;
  EXPECT_TRUE(m->AddLora(lora, 2).ok());
  EXPECT_TRUE(m->SetBaseFormat(model::BaseFormat::kInt4).ok());
  return m;
}

TEST(DeviceRoundTest, ALanguageModelTaskCarriesAdaptersAndTrainsThem) {
  auto coordinator_side = DeviceLm(4);
  const SentTask sent = SendLanguageModelTask(coordinator_side->AdaptersToProto());
  DeviceResources device;
  device.num_examples = 500;  // tokens
  auto task = AdmitTask(sent.header, device);
  ASSERT_THAT(task.status(), IsOk());
  EXPECT_EQ(task->model.parameters_size(), 2 * 7 + 2);
  ASSERT_THAT(DecodeTaskPayload(sent.payload, *task), IsOk());

  base::Rng rng(4);
  std::vector<int32_t> text(500);
  for (int32_t& t : text) t = static_cast<int32_t>(rng.UniformInt(40));
  const data::TokenWindows windows = data::TokenWindows::Create(text, 12).value();
  auto device_model = DeviceLm(4);
  auto u = TrainLanguageModelTask(task->header, task->model, *device_model, windows, 9);
  ASSERT_THAT(u.status(), IsOk());
  EXPECT_EQ(u->num_examples, windows.num_windows() * 12);
  EXPECT_GT(u->delta_norm, 0.0);
  auto encoded = EncodeUpdate(task->header, *u, "dev", 1);
  ASSERT_THAT(encoded.status(), IsOk());
  EXPECT_EQ(encoded->header.manifest().tensors_size(), 2 * 7 + 2);

  // A model that is not the task's, text in other windows: refused.
  auto other = DeviceLm(2);
  EXPECT_THAT(TrainLanguageModelTask(task->header, task->model, *other, windows, 9).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const data::TokenWindows longer = data::TokenWindows::Create(text, 16).value();
  EXPECT_THAT(TrainLanguageModelTask(task->header, task->model, *device_model, longer, 9).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("windows")));
}

// The device's copy of a task's base: the file's values, the task's format, and A drawn
// from the job's seed, so that a frozen A (FFA-LoRA), which never travels, is the
// coordinator's.
TEST(DeviceRoundTest, TheDevicesBaseIsTheFilesWithTheJobsFrozenA) {
  auto base = model::TransformerLM::Create(SmallLm()).value();
  base->InitParameters(3);
  const v1::ModelProto file = base->ToProto();
  model::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8.0f;
  lora.output = true;
  lora.freeze_a = true;
  auto coordinator_side = model::TransformerLM::Create(SmallLm()).value();
  ASSERT_THAT(coordinator_side->SetParameters(file), IsOk());
  ASSERT_THAT(coordinator_side->AddLora(lora, 77), IsOk());
  SentTask sent = SendLanguageModelTask(coordinator_side->AdaptersToProto());
  sent.header.mutable_language_model()->mutable_lora()->set_freeze_a(true);
  sent.header.mutable_language_model()->mutable_lora()->set_seed(77);
  *sent.header.mutable_model_spec()->mutable_transformer() = file.spec().transformer();
  int loads = 0;
  auto device = LanguageModelForTask(sent.header, [&]() -> absl::StatusOr<v1::ModelProto> {
    ++loads;
    return file;
  });
  ASSERT_THAT(device.status(), IsOk());
  EXPECT_EQ(loads, 1);
  EXPECT_EQ((*device)->base_format(), model::BaseFormat::kInt4);
  // B (what travels) the same on both sides and non-zero: the outputs agree exactly only
  // if the frozen A's do.
  ASSERT_THAT(coordinator_side->SetBaseFormat(model::BaseFormat::kInt4), IsOk());
  v1::ModelProto b = coordinator_side->AdaptersToProto();
  base::Rng rng(5);
  for (v1::TensorProto& t : *b.mutable_parameters()) {
    for (float& v : *t.mutable_values()) v = static_cast<float>(rng.Normal() * 0.1);
  }
  ASSERT_THAT(coordinator_side->SetAdapters(b), IsOk());
  ASSERT_THAT((*device)->SetAdapters(b), IsOk());
  const std::vector<int32_t> tokens = {1, 5, 9, 2, 7, 3};
  const int vocab = SmallLm().vocab_size;
  const float* theirs = coordinator_side->Forward(tokens.data(), 1, 6, false);
  const std::vector<float> expected(theirs, theirs + 6 * vocab);
  const float* mine = (*device)->Forward(tokens.data(), 1, 6, false);
  EXPECT_EQ(std::vector<float>(mine, mine + 6 * vocab), expected);
  // Another seed: another A, other outputs.
  sent.header.mutable_language_model()->mutable_lora()->set_seed(78);
  auto other = LanguageModelForTask(sent.header, [&]() -> absl::StatusOr<v1::ModelProto> {
    return file;
  });
  ASSERT_THAT(other.status(), IsOk());
  ASSERT_THAT((*other)->SetAdapters(b), IsOk());
  const float* others = (*other)->Forward(tokens.data(), 1, 6, false);
  EXPECT_NE(std::vector<float>(others, others + 6 * vocab), expected);
  // A file of another architecture is refused, naming why.
  v1::TaskHeader wider = sent.header;
  wider.mutable_model_spec()->mutable_transformer()->set_ffn_dim(64);
  EXPECT_THAT(LanguageModelForTask(wider, [&]() -> absl::StatusOr<v1::ModelProto> {
                return file;
              }).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("architecture")));
}

// A language-model task names its base by SHA-256: a device whose base file is another one
// refuses it before its payload, with both digests in the reason.
TEST(DeviceRoundTest, ALanguageModelTaskOfAnotherBaseIsRefused) {
  auto coordinator_side = DeviceLm(4);
  SentTask sent = SendLanguageModelTask(coordinator_side->AdaptersToProto());
  const std::string job_base(64, 'a'), other(64, 'b');
  sent.header.mutable_language_model()->set_base_sha256(job_base);
  DeviceResources device;
  device.num_examples = 500;
  device.language_model_base_sha256 = other;
  EXPECT_THAT(AdmitTask(sent.header, device).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(job_base), HasSubstr(other))));
  device.language_model_base_sha256 = job_base;
  EXPECT_THAT(AdmitTask(sent.header, device).status(), IsOk());
  device.language_model_base_sha256.clear();  // not checked (the simulator's devices)
  EXPECT_THAT(AdmitTask(sent.header, device).status(), IsOk());
}

// A full-parameter task: its payload is every parameter; a header that names adapters too
// is malformed, and a budget below the full round's estimate refuses it before anything is
// allocated for it.
TEST(DeviceRoundTest, AFullParameterTaskIsAdmittedOnlyWhenWellFormedAndWithinBudget) {
  auto coordinator_side = model::TransformerLM::Create(SmallLm()).value();
  coordinator_side->InitParameters(2);
  SentTask sent = SendLanguageModelTask(coordinator_side->ToProto());
  sent.header.mutable_language_model()->clear_lora();
  sent.header.mutable_language_model()->set_full_parameters(true);
  DeviceResources device;
  device.num_examples = 500;
  auto task = AdmitTask(sent.header, device);
  ASSERT_THAT(task.status(), IsOk());
  EXPECT_EQ(task->model.parameters_size(), coordinator_side->ToProto().parameters_size());
  ASSERT_THAT(DecodeTaskPayload(sent.payload, *task), IsOk());

  v1::TaskHeader both = sent.header;
  both.mutable_language_model()->mutable_lora()->set_rank(4);
  EXPECT_THAT(AdmitTask(both, device).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("names adapters")));
  device.memory_budget_bytes = 64 << 10;
  EXPECT_THAT(AdmitTask(sent.header, device).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

// A task that fits the budget only with activation checkpointing is admitted with it; one
// that fits without is not checkpointed (it costs a forward pass a step).
TEST(DeviceRoundTest, ALanguageModelTaskFitsItsBudgetWithActivationCheckpointing) {
  model::TransformerConfig three = SmallLm();
  three.num_layers = 3;  // checkpointing keeps one block's activations of three
  auto m = model::TransformerLM::Create(three).value();
  model::LoraConfig l;
  l.rank = 4;
  l.alpha = 8.0f;
  l.output = true;
  ASSERT_TRUE(m->AddLora(l, 2).ok());
  const SentTask sent = SendLanguageModelTask(m->AdaptersToProto());
  const v1::TaskHeader& h = sent.header;
  ASSERT_EQ(h.model_spec().transformer().num_layers(), 3);
  const model::TransformerConfig config =
      model::TransformerConfigFromSpec(h.model_spec().transformer());
  const model::LoraConfig lora = model::LoraConfigFromSpec(h.language_model().lora());
  const bool adam = h.training().optimizer() == v1::OPTIMIZER_KIND_ADAM;
  auto estimate = [&](bool checkpoint) {
    return model::EstimateLoraRoundMemoryBytes(config, lora, LanguageModelBaseFormat(h),
                                               h.training().batch_size(),
                                               h.language_model().window(), adam, checkpoint);
  };
  DeviceResources device;
  device.num_examples = 30;
  const int64_t text = 4 * device.num_examples;
  ASSERT_LT(estimate(true), estimate(false));
  device.memory_budget_bytes = estimate(false) + text;
  auto fits = AdmitTask(h, device);
  ASSERT_THAT(fits.status(), IsOk());
  EXPECT_FALSE(fits->checkpoint_activations);
  device.memory_budget_bytes = estimate(false) + text - 1;
  auto tight = AdmitTask(h, device);
  ASSERT_THAT(tight.status(), IsOk());
  EXPECT_TRUE(tight->checkpoint_activations);
  device.memory_budget_bytes = estimate(true) + text;
  EXPECT_TRUE(AdmitTask(h, device)->checkpoint_activations);
  device.memory_budget_bytes = estimate(true) + text - 1;
  EXPECT_THAT(AdmitTask(h, device).status(), StatusIs(absl::StatusCode::kResourceExhausted));
  device.memory_budget_bytes = 0;  // no budget: no checkpointing
  EXPECT_FALSE(AdmitTask(h, device)->checkpoint_activations);
}

TEST(DeviceRoundTest, ALanguageModelTaskOverTheBudgetIsDeclinedWithTheReason) {
  auto m = DeviceLm(4);
  const SentTask sent = SendLanguageModelTask(m->AdaptersToProto());
  DeviceResources device;
  device.num_examples = 30;
  device.memory_budget_bytes = 100'000;
  EXPECT_THAT(AdmitTask(sent.header, device).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  device.memory_budget_bytes = 64'000'000;
  EXPECT_THAT(AdmitTask(sent.header, device).status(), IsOk());
  SentTask bad = SendLanguageModelTask(m->AdaptersToProto(), /*window=*/17);
  EXPECT_THAT(AdmitTask(bad.header, device).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window")));
  bad = SendLanguageModelTask(m->AdaptersToProto());
  bad.header.mutable_language_model()->mutable_lora()->set_rank(8);  // the manifest has rank 4
  EXPECT_FALSE(AdmitTask(bad.header, device).ok());
}

}  // namespace
}  // namespace fedge::client
