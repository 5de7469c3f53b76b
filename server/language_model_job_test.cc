// A language-model job's coordinator side: its validation, its central model (the adapters of
// the base file under the data root) and its round report (perplexity on held-out text).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "base/rng.h"
#include "data/shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/language_model.h"
#include "model/serialize.h"
#include "privacy/sodium.h"
#include "server/job_config.h"
#include "server/job_strategy.h"
#include "server/model_weights.h"
#include "server/round_planner.h"
#include "server/round_report.h"
#include "tests/status_matchers.h"
#include "tests/tiny_language_model.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

// A data root with a small base model (base.pb) and held-out text (eval.txtshard).
class LanguageModelJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (std::filesystem::temp_directory_path() /
             ("lm_job_test_" + std::to_string(::getpid())))
                .string();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(root_));
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  v1::JobConfig Job() const {
    v1::JobConfig job;
    job.set_name("lm");
    job.set_rounds(3);
    job.set_init_seed(5);
    job.mutable_language_model()->set_base_path("base.pb");
    job.mutable_language_model()->mutable_lora()->set_rank(4);
    job.mutable_language_model()->set_eval_text_path("eval.txtshard");
    return job;
  }
  std::string root_;
};

TEST_F(LanguageModelJobTest, ValidationFillsDefaultsAndRefusesWhatCannotRun) {
  auto v = ValidateJobConfig(Job());
  ASSERT_THAT(v, IsOk());
  EXPECT_FLOAT_EQ(v->language_model().lora().alpha(), 8.0f);
  EXPECT_TRUE(v->language_model().lora().attention());
  EXPECT_TRUE(v->language_model().lora().mlp());
  EXPECT_EQ(v->language_model().lora().base_format(), v1::LoraSpec::BASE_FORMAT_FP32);
  EXPECT_TRUE(v->evaluation().dataset().empty());  // no image data named
  // The weight cap counts tokens: max_steps × batch × window.
  v1::JobConfig capped = Job();
  capped.mutable_local_training()->set_max_steps(10);
  capped.mutable_local_training()->set_batch_size(4);
  capped.mutable_language_model()->set_window(16);
  EXPECT_EQ(ValidateJobConfig(capped)->robustness().max_examples_per_update(), 10 * 4 * 16);

  v1::JobConfig bad = Job();
  bad.set_architecture("mlp");
  bad.mutable_language_model()->clear_base_path();
  bad.mutable_language_model()->mutable_lora()->set_rank(0);
  bad.mutable_local_training()->set_compute_mode(v1::COMPUTE_MODE_INT8);
  bad.mutable_sub_models()->add_tiers()->set_width_ratio(0.5);
  bad.mutable_evaluation()->set_dataset("fashion-mnist");
  bad.mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT4_BLOCK32);
  const std::string message(ValidateJobConfig(bad).status().message());
  for (const char* field : {"architecture", "language_model.base_path",
                            "language_model.lora.rank", "local_training.compute_mode",
                            "sub_models.tiers", "evaluation", "transfer.task_encoding"}) {
    EXPECT_THAT(message, HasSubstr(field));
  }
  // The adapters may travel as int8 both ways.
  v1::JobConfig int8 = Job();
  int8.mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  int8.mutable_transfer()->set_update_encoding(v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  EXPECT_THAT(ValidateJobConfig(int8).status(), IsOk());
}

TEST_F(LanguageModelJobTest, TheCentralModelIsTheAdaptersOfTheBaseFile) {
  const v1::JobConfig job = ValidateJobConfig(Job()).value();
  auto m = MakeJobModel(job, root_);
  ASSERT_THAT(m.status(), IsOk());
  ASSERT_NE(m->language_model, nullptr);
  EXPECT_TRUE(m->model_spec.has_transformer());
  EXPECT_EQ(m->num_parameters, m->language_model->model->num_adapter_parameters());
  ASSERT_EQ(m->weights.size(), 7u * 2);  // A and B of the block's seven projections
  for (const auto& w : m->weights) {
    EXPECT_TRUE(absl::EndsWith(w.name, ".lora_a") || absl::EndsWith(w.name, ".lora_b"))
        << w.name;
  }
  // The base file's digest, which a stored job (or an operator) pins.
  EXPECT_EQ(m->base_sha256, privacy::Sha256FileHex(root_ + "/base.pb").value());
  v1::JobConfig pinned = job;
  pinned.mutable_language_model()->set_base_sha256(m->base_sha256);
  EXPECT_THAT(MakeJobModel(pinned, root_).status(), IsOk());
  pinned.mutable_language_model()->set_base_sha256(std::string(64, '0'));
  EXPECT_THAT(MakeJobModel(pinned, root_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("replaced")));
  pinned.mutable_language_model()->set_base_sha256("not-a-digest");
  EXPECT_THAT(ValidateJobConfig(pinned).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("language_model.base_sha256")));
  // Seeded: the same A from the same init_seed, and B starts at zero.
  EXPECT_EQ(MakeJobModel(job, root_)->weights[0].values, m->weights[0].values);
  for (float v : m->weights[1].values) ASSERT_EQ(v, 0.0f);

  v1::JobConfig other = job;
  other.mutable_language_model()->set_base_path("../base.pb");
  EXPECT_FALSE(MakeJobModel(other, root_).ok());
  other.mutable_language_model()->set_base_path("missing.pb");
  EXPECT_THAT(MakeJobModel(other, root_).status(), StatusIs(absl::StatusCode::kNotFound));
  other = job;
  other.mutable_model_spec()->mutable_transformer()->set_dim(64);  // a stored job's spec
  EXPECT_THAT(MakeJobModel(other, root_).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                            HasSubstr("another architecture")));
  other = job;
  other.mutable_language_model()->set_window(17);
  EXPECT_THAT(MakeJobModel(other, root_).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                            HasSubstr("context")));
}

TEST_F(LanguageModelJobTest, RoundsReportPerplexityOnTheHeldOutText) {
  v1::JobConfig job = ValidateJobConfig(Job()).value();
  auto m = MakeJobModel(job, root_).value();
  *job.mutable_model_spec() = m.model_spec;
  auto planner = RoundPlanner::Create(job).value();
  auto report = RoundReport::ForLanguageModel(job, *planner, m.language_model, root_);
  ASSERT_THAT(report.status(), IsOk());
  const v1::ModelProto central = ProtoFromWeights(job.model_spec(), m.weights);
  v1::RoundMetrics metrics;
  ASSERT_THAT((*report)->Evaluate(central, 1, &metrics), IsOk());
  EXPECT_TRUE(metrics.evaluated());
  EXPECT_GT(metrics.eval_tokens(), 0);
  EXPECT_NEAR(metrics.test_perplexity(), std::exp(metrics.test_loss()), 1e-6 * metrics.test_perplexity());
  // An untrained model: about uniform over the vocabulary.
  EXPECT_NEAR(metrics.test_loss(), std::log(static_cast<double>(m.model_spec.transformer().vocab_size())), 0.2);

  // Different adapters, a different score.
  aggregation::ModelWeights moved = m.weights;
  base::Rng rng(3);
  for (auto& w : moved) {
    for (float& v : w.values) v += static_cast<float>(0.5 * rng.Normal());
  }
  v1::RoundMetrics again;
  ASSERT_THAT((*report)->Evaluate(ProtoFromWeights(job.model_spec(), moved), 2, &again), IsOk());
  EXPECT_NE(again.test_loss(), metrics.test_loss());

  job.mutable_language_model()->set_eval_text_path("nowhere.txtshard");
  EXPECT_THAT(RoundReport::ForLanguageModel(job, *planner, m.language_model, root_).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

// Full-parameter fine-tuning: the central model is every parameter of the base file, its
// rounds scored with those parameters; adapters and full_parameters exclude each other.
TEST_F(LanguageModelJobTest, AFullParameterJobsCentralModelIsTheWholeBase) {
  v1::JobConfig raw = Job();
  raw.mutable_language_model()->clear_lora();
  raw.mutable_language_model()->set_full_parameters(true);
  v1::JobConfig both = raw;
  both.mutable_language_model()->mutable_lora()->set_rank(4);
  EXPECT_THAT(ValidateJobConfig(both).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("language_model.lora")));
  v1::JobConfig job = ValidateJobConfig(raw).value();
  EXPECT_FALSE(job.language_model().has_lora());
  auto m = MakeJobModel(job, root_);
  ASSERT_THAT(m.status(), IsOk());
  EXPECT_FALSE(m->model_spec.has_lora());
  EXPECT_EQ(m->num_parameters, m->language_model->model->num_parameters());
  const v1::ModelProto file = model::LoadModel(root_ + "/base.pb").value();
  ASSERT_EQ(m->weights.size(), static_cast<size_t>(file.parameters_size()));
  for (size_t i = 0; i < m->weights.size(); ++i) {
    EXPECT_EQ(m->weights[i].name, file.parameters(static_cast<int>(i)).name());
    EXPECT_TRUE(std::equal(m->weights[i].values.begin(), m->weights[i].values.end(),
                           file.parameters(static_cast<int>(i)).values().begin()));
  }
  // The template a device admits such a task with: the same names, shapes and order.
  const v1::ModelProto tmpl = model::TransformerParameterTemplate(
      model::TransformerConfigFromSpec(file.spec().transformer()));
  ASSERT_EQ(tmpl.parameters_size(), file.parameters_size());
  for (int i = 0; i < tmpl.parameters_size(); ++i) {
    EXPECT_EQ(tmpl.parameters(i).name(), file.parameters(i).name());
    EXPECT_EQ(tmpl.parameters(i).values_size(), file.parameters(i).values_size());
  }

  *job.mutable_model_spec() = m->model_spec;
  auto planner = RoundPlanner::Create(job).value();
  auto report = RoundReport::ForLanguageModel(job, *planner, m->language_model, root_);
  ASSERT_THAT(report.status(), IsOk());
  v1::RoundMetrics base_metrics, moved_metrics;
  ASSERT_THAT((*report)->Evaluate(ProtoFromWeights(job.model_spec(), m->weights), 1, &base_metrics),
              IsOk());
  aggregation::ModelWeights moved = m->weights;
  base::Rng rng(3);
  for (float& v : moved[0].values) v += static_cast<float>(0.5 * rng.Normal());
  ASSERT_THAT((*report)->Evaluate(ProtoFromWeights(job.model_spec(), moved), 2, &moved_metrics),
              IsOk());
  EXPECT_TRUE(base_metrics.evaluated());
  EXPECT_NE(moved_metrics.test_loss(), base_metrics.test_loss());
}

}  // namespace
}  // namespace fedge::server
