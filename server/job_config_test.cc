#include "server/job_config.h"

#include <limits>

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kFullJob[] = R"pb(
  # A job with every section written out.
  name: "fmnist-cnn-fedprox"
  architecture: "cnn"
  init_seed: 7
  strategy { fed_prox { mu: 0.1 } server_learning_rate: 1.0 }
  rounds: 20
  selection { clients_per_round: 10 seed: 3 }
  round_policy { quorum: 8 deadline_seconds: 120 }
  local_training {
    epochs: 5
    batch_size: 64
    optimizer: OPTIMIZER_KIND_SGD
    learning_rate: 0.01
    momentum: 0.9
    weight_decay: 1e-5
    compute_mode: COMPUTE_MODE_INT8
  }
  preprocessing { kind: KIND_UNIT_RANGE }
  distillation { weight: 0.5 temperature: 3 }
  sub_models {
    tiers { name: "full" width_ratio: 1 }
    tiers { name: "half" width_ratio: 0.5 }
    rules { tier: "full" min_memory_budget_bytes: 100000000 }
    default_tier: "half"
  }
  privacy { clip_norm: 1.0 noise_multiplier: 0.8 delta: 1e-5 secure_aggregation_threshold: 5 }
  evaluation { dataset: "fashion-mnist" batch_size: 500 }
  keep_checkpoints: 5
)pb";

constexpr char kMinimalJob[] = R"pb(
  name: "minimal"
  architecture: "mlp"
  rounds: 3
)pb";

TEST(JobConfigTest, FullJobParsesAndValidates) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(kFullJob, "full.textproto");
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->name(), "fmnist-cnn-fedprox");
  EXPECT_EQ(job->rounds(), 20);
  ASSERT_TRUE(job->strategy().has_fed_prox());
  EXPECT_DOUBLE_EQ(job->strategy().fed_prox().mu(), 0.1);
  EXPECT_EQ(job->selection().clients_per_round(), 10);
  EXPECT_EQ(job->selection().seed(), 3u);
  EXPECT_EQ(job->round_policy().quorum(), 8);
  EXPECT_DOUBLE_EQ(job->round_policy().deadline_seconds(), 120);
  EXPECT_EQ(job->local_training().epochs(), 5);
  EXPECT_EQ(job->local_training().compute_mode(), v1::COMPUTE_MODE_INT8);
  EXPECT_DOUBLE_EQ(job->local_training().momentum(), 0.9);
  EXPECT_DOUBLE_EQ(job->distillation().weight(), 0.5);
  EXPECT_EQ(job->sub_models().tiers_size(), 2);
  EXPECT_EQ(job->privacy().secure_aggregation_threshold(), 5);
  EXPECT_EQ(job->evaluation().batch_size(), 500);
  EXPECT_EQ(job->keep_checkpoints(), 5);
  // The architecture name is resolved into a self-contained spec.
  absl::StatusOr<v1::ModelSpec> cnn = model::ArchitectureByName("cnn");
  ASSERT_THAT(cnn, IsOk());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(job->model_spec(), *cnn));
}

TEST(JobConfigTest, MinimalJobGetsDocumentedDefaults) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(kMinimalJob);
  ASSERT_THAT(job, IsOk());
  EXPECT_TRUE(job->strategy().has_fed_avg());
  EXPECT_DOUBLE_EQ(job->strategy().server_learning_rate(), 1.0);
  EXPECT_EQ(job->selection().clients_per_round(), kDefaultClientsPerRound);
  EXPECT_EQ(job->round_policy().quorum(), kDefaultClientsPerRound);
  EXPECT_DOUBLE_EQ(job->round_policy().deadline_seconds(), kDefaultDeadlineSeconds);
  EXPECT_EQ(job->local_training().epochs(), 1);
  EXPECT_EQ(job->local_training().batch_size(), 64);
  EXPECT_DOUBLE_EQ(job->local_training().learning_rate(), 0.01);
  EXPECT_EQ(job->local_training().optimizer(), v1::OPTIMIZER_KIND_SGD);
  EXPECT_EQ(job->local_training().compute_mode(), v1::COMPUTE_MODE_FP32);
  EXPECT_EQ(job->preprocessing().kind(), v1::Preprocessing::KIND_UNIT_RANGE);
  EXPECT_DOUBLE_EQ(job->distillation().weight(), 0.0);
  EXPECT_DOUBLE_EQ(job->distillation().temperature(), 2.0);
  EXPECT_DOUBLE_EQ(job->privacy().delta(), 1e-5);
  EXPECT_EQ(job->evaluation().dataset(), "fashion-mnist");
  EXPECT_EQ(job->evaluation().batch_size(), 256);
  EXPECT_EQ(job->keep_checkpoints(), kDefaultKeepCheckpoints);
  EXPECT_EQ(job->model_spec().name(), "mlp");
}

TEST(JobConfigTest, AdaptiveStrategiesDefaultToSmallServerLearningRate) {
  absl::StatusOr<v1::JobConfig> job =
      LoadJobConfig(std::string(kMinimalJob) + "strategy { fed_yogi { beta1: 0.8 } }");
  ASSERT_THAT(job, IsOk());
  EXPECT_DOUBLE_EQ(job->strategy().server_learning_rate(), 0.01);
  EXPECT_DOUBLE_EQ(job->strategy().fed_yogi().beta1(), 0.8);
  EXPECT_DOUBLE_EQ(job->strategy().fed_yogi().beta2(), 0.99);
  EXPECT_DOUBLE_EQ(job->strategy().fed_yogi().tau(), 1e-3);
}

constexpr char kFedCgJob[] = R"pb(
  name: "fedcg"
  rounds: 3
  strategy { fed_cg { distill_steps: 100 } }
)pb";

absl::Status ValidateFedCg(const std::string& extra) {
  absl::StatusOr<v1::JobConfig> parsed = ParseJobConfig(std::string(kFedCgJob) + extra);
  if (!parsed.ok()) return parsed.status();
  return ValidateJobConfig(*parsed).status();
}

TEST(JobConfigTest, FedCgJobGetsThePapersDefaultsAndAShapeSpec) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(kFedCgJob);
  ASSERT_THAT(job, IsOk());
  const v1::FedCgParams& f = job->strategy().fed_cg();
  EXPECT_EQ(f.distill_steps(), 100);
  EXPECT_EQ(f.distill_batch(), 8);
  EXPECT_EQ(f.image_size(), 32);
  EXPECT_EQ(f.channels(), 1);
  EXPECT_EQ(f.num_classes(), 10);
  EXPECT_EQ(f.noise_dim(), 100);
  EXPECT_EQ(f.embed_dim(), 10);
  EXPECT_EQ(f.gan_epochs(), 20);
  EXPECT_DOUBLE_EQ(f.gan_learning_rate(), 3e-4);
  EXPECT_EQ(f.gamma_ramp_rounds(), 50);
  EXPECT_DOUBLE_EQ(f.eval_holdout_fraction(), 0.1);
  EXPECT_TRUE(f.discriminator_spectral_norm());
  // E+C training: the paper's 20 epochs, batch 8, Adam 3e-4.
  EXPECT_EQ(job->local_training().epochs(), 20);
  EXPECT_EQ(job->local_training().batch_size(), 8);
  EXPECT_DOUBLE_EQ(job->local_training().learning_rate(), 3e-4);
  EXPECT_EQ(job->local_training().optimizer(), v1::OPTIMIZER_KIND_ADAM);
  // The model spec names the shape only.
  EXPECT_EQ(job->model_spec().name(), "fedcg");
  EXPECT_THAT(job->model_spec().input_shape(), ::testing::ElementsAre(32, 32, 1));
  EXPECT_EQ(job->model_spec().layers_size(), 0);
  absl::StatusOr<v1::JobConfig> twice = ValidateJobConfig(*job);
  ASSERT_THAT(twice, IsOk());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*job, *twice));
}

TEST(JobConfigTest, FedCgRefusesWhatItCannotDoNamingTheField) {
  EXPECT_THAT(ValidateFedCg(""), IsOk());
  auto refused = [](const std::string& extra, const std::string& field,
                    const std::string& why) {
    EXPECT_THAT(ValidateFedCg(extra), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr(field), HasSubstr(why))))
        << extra;
  };
  refused("privacy { secure_aggregation_threshold: 2 clip_norm: 1 }", "strategy.fed_cg",
          "secure aggregation");
  refused("privacy { clip_norm: 1 noise_multiplier: 1 }", "privacy.noise_multiplier",
          "unnoised");
  refused("privacy { clip_norm: 1 }", "privacy.clip_norm", "unclipped");
  refused("sub_models { tiers { name: \"half\" width_ratio: 0.5 } }", "sub_models.tiers",
          "no sub-models");
  refused("architecture: \"mlp\"", "architecture", "must be omitted");
  refused("local_training { optimizer: OPTIMIZER_KIND_SGD }", "local_training.optimizer",
          "Adam");
  refused("local_training { compute_mode: COMPUTE_MODE_INT8 }", "local_training.compute_mode",
          "fp32");
  refused("local_training { max_steps: 10 }", "local_training.max_steps", "whole epochs");
  refused("preprocessing { kind: KIND_STANDARDIZE }", "preprocessing.kind", "[-1, 1]");
  refused("distillation { weight: 0.5 }", "distillation.weight", "server");
  absl::StatusOr<v1::JobConfig> eta = ParseJobConfig(
      "name: \"x\" rounds: 1 strategy { fed_cg {} server_learning_rate: 0.5 }");
  ASSERT_THAT(eta, IsOk());
  EXPECT_THAT(ValidateJobConfig(*eta),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("strategy.server_learning_rate"), HasSubstr("must be 1"))));
  // Quantized transfer is supported.
  EXPECT_THAT(ValidateFedCg("transfer { task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL "
                            "update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED }"),
              IsOk());
  absl::StatusOr<v1::JobConfig> bad = ParseJobConfig(
      std::string(kMinimalJob) + "strategy { fed_cg { distill_batch: 0 image_size: 8 } }");
  ASSERT_THAT(bad, IsOk());
  EXPECT_THAT(ValidateJobConfig(*bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("strategy.fed_cg.distill_batch"),
                             HasSubstr("strategy.fed_cg.image_size"))));
}

TEST(JobConfigTest, FedCgConvolutionalGanNeedsAFiveByFiveFeatureMap) {
  auto validate = [](const std::string& fed_cg) {
    absl::StatusOr<v1::JobConfig> job =
        ParseJobConfig("name: \"x\" rounds: 1 strategy { fed_cg { " + fed_cg + " } }");
    EXPECT_THAT(job, IsOk());
    return ValidateJobConfig(*job).status();
  };
  EXPECT_THAT(validate("gan_architecture: FEDCG_GAN_CONV_BATCHNORM"), IsOk());
  // Its D has batch norm, not the dense D's spectral normalization: unset means false, and
  // asking for it is refused instead of being ignored.
  absl::StatusOr<v1::JobConfig> conv = LoadJobConfig(
      "name: \"x\" rounds: 1 strategy { fed_cg { gan_architecture: FEDCG_GAN_CONV_BATCHNORM } }");
  ASSERT_THAT(conv, IsOk());
  EXPECT_TRUE(conv->strategy().fed_cg().has_discriminator_spectral_norm());
  EXPECT_FALSE(conv->strategy().fed_cg().discriminator_spectral_norm());
  EXPECT_THAT(validate("gan_architecture: FEDCG_GAN_CONV_BATCHNORM "
                       "discriminator_spectral_norm: false"),
              IsOk());
  EXPECT_THAT(validate("gan_architecture: FEDCG_GAN_CONV_BATCHNORM "
                       "discriminator_spectral_norm: true"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("strategy.fed_cg.discriminator_spectral_norm"),
                             HasSubstr("DENSE"))));
  EXPECT_THAT(validate("gan_architecture: FEDCG_GAN_CONV_BATCHNORM image_size: 28"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("strategy.fed_cg.gan_architecture"),
                             HasSubstr("5 x 5"))));
  // Its running variances cannot travel quantized.
  absl::StatusOr<v1::JobConfig> quantized = ParseJobConfig(
      "name: \"x\" rounds: 1 strategy { fed_cg { gan_architecture: FEDCG_GAN_CONV_BATCHNORM } }"
      " transfer { task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL "
      "update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED }");
  ASSERT_THAT(quantized, IsOk());
  EXPECT_THAT(ValidateJobConfig(*quantized).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("transfer.task_encoding"),
                             HasSubstr("transfer.update_encoding"))));
  // Batch norm and transposed convolutions are not for trained (non-FedCG) models.
  absl::StatusOr<v1::JobConfig> bn = ParseJobConfig(
      "name: \"x\" rounds: 1 model_spec { input_shape: [4] layers { name: \"fc\" dense { "
      "in_features: 4 out_features: 3 } } layers { name: \"bn\" batch_norm2d {} } }");
  ASSERT_THAT(bn, IsOk());
  EXPECT_THAT(ValidateJobConfig(*bn).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model_spec"), HasSubstr("'bn'"))));
  absl::StatusOr<v1::JobConfig> unknown =
      ParseJobConfig("name: \"x\" rounds: 1 strategy { fed_cg { } }");
  ASSERT_THAT(unknown, IsOk());
  unknown->mutable_strategy()->mutable_fed_cg()->set_gan_architecture(
      static_cast<v1::FedCgGanArchitecture>(7));  // a binary config from a newer build
  EXPECT_THAT(ValidateJobConfig(*unknown).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("strategy.fed_cg.gan_architecture"),
                             HasSubstr("unknown"))));
}

TEST(JobConfigTest, RobustnessDefaultsAreDerivedFromTheTask) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(kMinimalJob);
  ASSERT_THAT(job, IsOk());
  const v1::RobustnessConfig& r = job->robustness();
  EXPECT_EQ(r.aggregation_rule(), v1::RobustnessConfig::AGGREGATION_RULE_WEIGHTED_MEAN);
  EXPECT_EQ(r.max_examples_per_update(), 0);  // no max_steps: no job cap
  EXPECT_DOUBLE_EQ(r.max_weight_multiple(), 2);
  EXPECT_DOUBLE_EQ(r.max_update_norm(), 0);   // adaptive
  EXPECT_DOUBLE_EQ(r.norm_bound_multiple(), 2);
  EXPECT_TRUE(r.direction_check());               // on with the weighted mean
  EXPECT_DOUBLE_EQ(r.min_direction_agreement(), 0);
  EXPECT_FALSE(r.has_trim_fraction());
  job = LoadJobConfig(std::string(kMinimalJob) +
                      "local_training { max_steps: 5 batch_size: 32 epochs: 3 }");
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->robustness().max_examples_per_update(), 160);  // 5 steps × 32
  job = LoadJobConfig(std::string(kMinimalJob) +
                      "robustness { aggregation_rule: AGGREGATION_RULE_TRIMMED_MEAN }");
  ASSERT_THAT(job, IsOk());
  EXPECT_DOUBLE_EQ(job->robustness().trim_fraction(), 0.1);
  EXPECT_FALSE(job->robustness().direction_check());  // off with a robust rule
  absl::StatusOr<v1::JobConfig> twice = ValidateJobConfig(*job);
  ASSERT_THAT(twice, IsOk());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*job, *twice));
}

TEST(JobConfigTest, RobustRulesRefuseWhatTheyCannotWorkWith) {
  const std::string base = std::string(kMinimalJob);
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: AGGREGATION_RULE_TRIMMED_MEAN "
                                   "trim_fraction: 0.5 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("robustness.trim_fraction"), HasSubstr("[0, 0.5)"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: "
                                   "AGGREGATION_RULE_COORDINATE_MEDIAN } privacy { clip_norm: 1 "
                                   "secure_aggregation_threshold: 2 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("robustness.aggregation_rule"),
                             HasSubstr("secure aggregation"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: "
                                   "AGGREGATION_RULE_COORDINATE_MEDIAN } privacy { clip_norm: 1 "
                                   "noise_multiplier: 1 }"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("DP noise")));
  EXPECT_THAT(ValidateFedCg("robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM "
                            "krum_byzantine: 0 } round_policy { quorum: 4 }"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("strategy.fed_cg")));
  // Multi-Krum: quorum ≥ 2f + 3 (the default quorum 10 is not enough for f = 4), and
  // m ≤ quorum − f.
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM "
                                   "krum_byzantine: 4 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("round_policy.quorum"), HasSubstr("2f + 3 = 11"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM "
                                   "krum_selected: 10 }"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("robustness.krum_selected")));
  EXPECT_THAT(LoadJobConfig(base + "robustness { trim_fraction: 0.1 norm_bound_multiple: 0.5 "
                                   "max_update_norm: -1 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("applies to TRIMMED_MEAN only"),
                             HasSubstr("robustness.norm_bound_multiple"),
                             HasSubstr("robustness.max_update_norm"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM "
                                   "direction_check: true }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("robustness.direction_check"), HasSubstr("MULTI_KRUM"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { min_direction_agreement: 1.5 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("robustness.min_direction_agreement"),
                             HasSubstr("[-1, 1]"))));
  EXPECT_THAT(LoadJobConfig(base + "robustness { min_direction_agreement: nan }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("robustness.min_direction_agreement")));
  absl::StatusOr<v1::JobConfig> krum = LoadJobConfig(
      base + "robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM krum_selected: 9 }");
  ASSERT_THAT(krum, IsOk());
  EXPECT_EQ(krum->robustness().krum_byzantine(), 1);
}

TEST(JobConfigTest, ValidationIsIdempotent) {
  absl::StatusOr<v1::JobConfig> once = LoadJobConfig(kFullJob);
  ASSERT_THAT(once, IsOk());
  absl::StatusOr<v1::JobConfig> twice = ValidateJobConfig(*once);
  ASSERT_THAT(twice, IsOk());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*once, *twice));
}

TEST(JobConfigTest, ExplicitModelSpecIsAccepted) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(R"pb(
    name: "custom"
    rounds: 1
    model_spec {
      name: "tiny"
      input_shape: 4
      layers { name: "fc1" dense { in_features: 4 out_features: 3 } }
    }
  )pb");
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->model_spec().layers_size(), 1);
}

TEST(JobConfigTest, UnknownTopLevelFieldIsRejectedWithItsNameAndLine) {
  absl::StatusOr<v1::JobConfig> job =
      ParseJobConfig("name: \"x\"\nrounds: 3\nbogus_field: 1\n", "job.textproto");
  EXPECT_THAT(job, StatusIs(absl::StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("JobConfig: "), HasSubstr("bogus_field"),
                                  HasSubstr("job.textproto:3:"))));
}

TEST(JobConfigTest, UnknownNestedFieldIsRejectedWithItsName) {
  absl::StatusOr<v1::JobConfig> job =
      ParseJobConfig(std::string(kMinimalJob) + "local_training { batch: 32 }");
  EXPECT_THAT(job, StatusIs(absl::StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("\"batch\""), HasSubstr("LocalTraining"))));
}

TEST(JobConfigTest, UnknownEnumValueIsRejected) {
  absl::StatusOr<v1::JobConfig> job = ParseJobConfig(
      std::string(kMinimalJob) + "local_training { optimizer: OPTIMIZER_KIND_LION }");
  EXPECT_THAT(job, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("OPTIMIZER_KIND_LION")));
}

TEST(JobConfigTest, SyntaxErrorHasLineAndColumn) {
  absl::StatusOr<v1::JobConfig> job = ParseJobConfig("name: \"x\"\nrounds: {\n", "bad.txt");
  EXPECT_THAT(job, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad.txt:2:")));
}

TEST(JobConfigTest, OversizedTextIsRejected) {
  std::string text(kMaxJobConfigTextBytes + 1, ' ');
  EXPECT_THAT(ParseJobConfig(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("more than the limit")));
}

// A model too large for a job (here 2^28 parameters, 16384 × 16384 dense) is refused from
// its spec alone, before the network would be built (1 GiB of values and as much again of
// gradients); absurd layer sizes saturate rather than overflow.
TEST(JobConfigTest, OversizedModelsAreRefusedFromTheSpecAlone) {
  v1::JobConfig job = ParseJobConfig(kMinimalJob).value();
  job.clear_architecture();
  *job.mutable_model_spec() = model::MlpSpec({16384, 16384});
  EXPECT_THAT(ValidateJobConfig(job),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("268435456 parameters"), HasSubstr("at most 16777216"))));
  v1::LayerSpec* conv = job.mutable_model_spec()->mutable_layers(0);
  conv->clear_dense();
  conv->mutable_conv2d()->set_in_channels(1 << 30);
  conv->mutable_conv2d()->set_out_channels(1 << 30);
  conv->mutable_conv2d()->set_kernel_size(1 << 30);
  EXPECT_EQ(model::LayerParameterCount(*conv, 1), std::numeric_limits<int64_t>::max());
  EXPECT_THAT(ValidateJobConfig(job),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 16777216")));
  // The zoo's models are far below the bound.
  EXPECT_EQ(model::SpecParameterCount(model::MlpSpec({784, 200, 10})), 784 * 200 + 200 * 10);
}

// Each invalid job names the offending field.
struct InvalidCase {
  const char* what;
  std::string text;
  const char* field;
};

std::string Minimal(const std::string& extra) { return std::string(kMinimalJob) + extra; }

class JobConfigInvalidTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(JobConfigInvalidTest, NamesTheField) {
  const InvalidCase& c = GetParam();
  absl::StatusOr<v1::JobConfig> parsed = ParseJobConfig(c.text);
  ASSERT_THAT(parsed, IsOk()) << c.what;
  EXPECT_THAT(ValidateJobConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("JobConfig: "), HasSubstr(c.field))))
      << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    AllCases, JobConfigInvalidTest,
    ::testing::Values(
        InvalidCase{"zero rounds", "name: \"x\" architecture: \"mlp\" rounds: 0", "rounds"},
        InvalidCase{"negative rounds", "name: \"x\" architecture: \"mlp\" rounds: -4", "rounds"},
        InvalidCase{"missing name", "architecture: \"mlp\" rounds: 1", "name"},
        InvalidCase{"bad name", "name: \"a b\" architecture: \"mlp\" rounds: 1", "name"},
        InvalidCase{"no model", "name: \"x\" rounds: 1", "architecture"},
        InvalidCase{"unknown architecture", "name: \"x\" architecture: \"resnet\" rounds: 1",
                    "architecture"},
        InvalidCase{"broken model_spec",
                    "name: \"x\" rounds: 1 model_spec { name: \"m\" input_shape: 4 layers { "
                    "name: \"fc\" dense { in_features: 5 out_features: 2 } } }",
                    "model_spec"},
        InvalidCase{"spec disagrees with architecture",
                    "name: \"x\" architecture: \"mlp\" rounds: 1 model_spec { name: \"m\" }",
                    "model_spec"},
        InvalidCase{"fraction zero", Minimal("selection { fraction: 0 }"), "selection.fraction"},
        InvalidCase{"fraction above one", Minimal("selection { fraction: 1.5 }"),
                    "selection.fraction"},
        InvalidCase{"zero clients per round", Minimal("selection { clients_per_round: 0 }"),
                    "selection.clients_per_round"},
        InvalidCase{"quorum above clients per round",
                    Minimal("selection { clients_per_round: 5 } round_policy { quorum: 6 }"),
                    "round_policy.quorum"},
        InvalidCase{"zero quorum", Minimal("round_policy { quorum: 0 }"), "round_policy.quorum"},
        InvalidCase{"negative deadline", Minimal("round_policy { deadline_seconds: -1 }"),
                    "round_policy.deadline_seconds"},
        InvalidCase{"infinite deadline", Minimal("round_policy { deadline_seconds: inf }"),
                    "round_policy.deadline_seconds"},
        InvalidCase{"zero batch", Minimal("local_training { batch_size: 0 }"),
                    "local_training.batch_size"},
        InvalidCase{"zero epochs", Minimal("local_training { epochs: 0 }"),
                    "local_training.epochs"},
        InvalidCase{"zero lr", Minimal("local_training { learning_rate: 0 }"),
                    "local_training.learning_rate"},
        InvalidCase{"negative lr", Minimal("local_training { learning_rate: -0.1 }"),
                    "local_training.learning_rate"},
        InvalidCase{"nan lr", Minimal("local_training { learning_rate: nan }"),
                    "local_training.learning_rate"},
        InvalidCase{"momentum one", Minimal("local_training { momentum: 1 }"),
                    "local_training.momentum"},
        InvalidCase{"negative weight decay", Minimal("local_training { weight_decay: -1 }"),
                    "local_training.weight_decay"},
        InvalidCase{"nesterov without momentum", Minimal("local_training { nesterov: true }"),
                    "local_training.nesterov"},
        InvalidCase{"int4 training",
                    Minimal("local_training { compute_mode: COMPUTE_MODE_INT4 }"),
                    "local_training.compute_mode"},
        InvalidCase{"zero temperature", Minimal("distillation { temperature: 0 }"),
                    "distillation.temperature"},
        InvalidCase{"lambda above one", Minimal("distillation { weight: 1.5 }"),
                    "distillation.weight"},
        InvalidCase{"negative lambda", Minimal("distillation { weight: -0.1 }"),
                    "distillation.weight"},
        InvalidCase{"zero server lr", Minimal("strategy { fed_avg {} server_learning_rate: 0 }"),
                    "strategy.server_learning_rate"},
        InvalidCase{"negative mu", Minimal("strategy { fed_prox { mu: -1 } }"),
                    "strategy.fed_prox.mu"},
        InvalidCase{"adam beta2 one", Minimal("strategy { fed_adam { beta2: 1 } }"),
                    "strategy.fed_adam.beta2"},
        InvalidCase{"yogi zero tau", Minimal("strategy { fed_yogi { tau: 0 } }"),
                    "strategy.fed_yogi.tau"},
        InvalidCase{"tier ratio zero", Minimal("sub_models { tiers { name: \"t\" width_ratio: 0 } }"),
                    "sub_models.tiers[0].width_ratio"},
        InvalidCase{"rule names no tier",
                    Minimal("sub_models { tiers { name: \"t\" width_ratio: 1 } rules { tier: \"u\" } }"),
                    "sub_models.rules[0].tier"},
        InvalidCase{"int4 tier training",
                    Minimal("sub_models { tiers { name: \"t\" width_ratio: 1 compute_mode: "
                            "COMPUTE_MODE_INT4 } }"),
                    "sub_models.tiers[0].compute_mode"},
        InvalidCase{"rules with largest-fitting assignment",
                    Minimal("sub_models { tiers { name: \"t\" width_ratio: 1 } rules { tier: "
                            "\"t\" } assignment: ASSIGNMENT_LARGEST_FITTING }"),
                    "sub_models.rules"},
        InvalidCase{"default tier without tiers", Minimal("sub_models { default_tier: \"t\" }"),
                    "sub_models.tiers"},
        InvalidCase{"fixed-point task encoding",
                    Minimal("transfer { task_encoding: TENSOR_ENCODING_FIXED_POINT_U32 }"),
                    "transfer.task_encoding"},
        InvalidCase{"int4 update encoding",
                    Minimal("transfer { update_encoding: TENSOR_ENCODING_INT4_BLOCK32 }"),
                    "transfer.update_encoding"},
        InvalidCase{"noise without clipping", Minimal("privacy { noise_multiplier: 1 }"),
                    "privacy.noise_multiplier"},
        InvalidCase{"delta one", Minimal("privacy { delta: 1 }"), "privacy.delta"},
        InvalidCase{"secagg threshold above quorum",
                    Minimal("round_policy { quorum: 3 } privacy { secure_aggregation_threshold: 4 }"),
                    "privacy.secure_aggregation_threshold"},
        InvalidCase{"share threshold with derived neighbours",
                    Minimal("round_policy { quorum: 3 } privacy { clip_norm: 1 "
                            "secure_aggregation_threshold: 3 secure_aggregation_plus: true "
                            "secure_aggregation_share_threshold: 2 }"),
                    "privacy.secure_aggregation_share_threshold"},
        InvalidCase{"round_policy.max_failed_attempts negative",
                    Minimal("round_policy { max_failed_attempts: -1 }"),
                    "round_policy.max_failed_attempts"},
        InvalidCase{"unknown dataset", Minimal("evaluation { dataset: \"imagenet\" }"),
                    "evaluation.dataset"},
        InvalidCase{"zero eval batch", Minimal("evaluation { batch_size: 0 }"),
                    "evaluation.batch_size"},
        InvalidCase{"zero checkpoints", Minimal("keep_checkpoints: 0"), "keep_checkpoints"}));

TEST(JobConfigTest, EveryBadFieldIsReportedAtOnce) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(
      "name: \"x\" architecture: \"mlp\" rounds: 0 local_training { batch_size: -1 }");
  EXPECT_THAT(job, StatusIs(absl::StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("rounds"), HasSubstr("local_training.batch_size"))));
}

TEST(JobConfigTest, FractionLeavesQuorumToTheRound) {
  absl::StatusOr<v1::JobConfig> job = LoadJobConfig(Minimal("selection { fraction: 0.5 }"));
  ASSERT_THAT(job, IsOk());
  EXPECT_FALSE(job->round_policy().has_quorum());
  EXPECT_DOUBLE_EQ(job->selection().fraction(), 0.5);
  EXPECT_THAT(ValidateJobConfig(*job), IsOk());
}

TEST(JobConfigTest, ValidDefaultsAreNotErrors) {
  // A sanity check that the invalid cases above fail for their field, not for the base job.
  EXPECT_THAT(LoadJobConfig(kMinimalJob), IsOk());
  EXPECT_THAT(LoadJobConfig(Minimal("round_policy { deadline_seconds: 0 }")), IsOk());
  EXPECT_THAT(LoadJobConfig(Minimal("local_training { momentum: 0.9 nesterov: true }")), IsOk());
  EXPECT_THAT(LoadJobConfig(Minimal("evaluation { data_path: \"/tmp/x\" }")), IsOk());
}

}  // namespace
}  // namespace fedge::server
