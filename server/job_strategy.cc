#include "privacy/sodium.h"
#include "server/job_strategy.h"

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregation/fed_cg.h"
#include "aggregation/fed_opt.h"
#include "aggregation/robust_aggregators.h"
#include "base/status_macros.h"
#include "model/fedcg_nets.h"
#include "google/protobuf/util/message_differencer.h"
#include "model/sequential.h"
#include "model/serialize.h"
#include "model/transformer.h"
#include "server/round_report.h"
#include "server/model_weights.h"

namespace fedge::server {
namespace {

absl::StatusOr<std::unique_ptr<aggregation::Strategy>> MakeServerOptimizer(
    const v1::StrategyConfig& config);

absl::StatusOr<std::unique_ptr<aggregation::Strategy>> MakeStrategy(
    const v1::StrategyConfig& config) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<aggregation::Strategy> s, MakeServerOptimizer(config));
  s->set_exact_sums(config.exact_sums());
  return s;
}

absl::StatusOr<std::unique_ptr<aggregation::Strategy>> MakeServerOptimizer(
    const v1::StrategyConfig& config) {
  const double eta = config.has_server_learning_rate() ? config.server_learning_rate() : 1.0;
  switch (config.kind_case()) {
    case v1::StrategyConfig::kFedAdam:
    case v1::StrategyConfig::kFedYogi: {
      const v1::AdaptiveServerOptimizerParams& p =
          config.has_fed_adam() ? config.fed_adam() : config.fed_yogi();
      aggregation::AdaptiveOptions o;
      o.server_learning_rate = config.has_server_learning_rate() ? eta : o.server_learning_rate;
      if (p.has_beta1()) o.beta1 = p.beta1();
      if (p.has_beta2()) o.beta2 = p.beta2();
      if (p.has_tau()) o.tau = p.tau();
      FEDGE_ASSIGN_OR_RETURN(
          auto s, aggregation::AdaptiveServerOptimizer::Create(
                      config.has_fed_adam() ? aggregation::AdaptiveServerOptimizer::Rule::kAdam
                                            : aggregation::AdaptiveServerOptimizer::Rule::kYogi,
                      o));
      return std::unique_ptr<aggregation::Strategy>(std::move(s));
    }
    default: {
      // FedAvg and FedProx (whose μ only changes the clients' objective).
      aggregation::FedAvgOptions o;
      o.server_learning_rate = eta;
      FEDGE_ASSIGN_OR_RETURN(auto s, aggregation::FedAvg::Create(o));
      return std::unique_ptr<aggregation::Strategy>(std::move(s));
    }
  }
}

absl::StatusOr<JobModel> FedCgModel(const v1::JobConfig& config) {
  // Job validation refused what FedCG cannot run with (tiers, DP, secure aggregation).
  const v1::FedCgParams& f = config.strategy().fed_cg();
  aggregation::FedCgOptions o;
  o.shape = model::FedCgShapeFromParams(f);
  o.distill_steps = f.distill_steps();
  o.distill_batch = f.distill_batch();
  o.learning_rate = static_cast<float>(f.distill_learning_rate());
  o.weight_decay = static_cast<float>(config.local_training().weight_decay());
  o.seed = config.init_seed();
  o.persistent_distill_optimizer = f.persistent_distill_optimizer();
  JobModel out;
  FEDGE_ASSIGN_OR_RETURN(out.strategy, aggregation::FedCg::Create(o));
  FEDGE_ASSIGN_OR_RETURN(out.weights, aggregation::FedCg::InitialModel(o.shape, config.init_seed()));
  for (const aggregation::Tensor& t : out.weights) {
    out.num_parameters += static_cast<int64_t>(t.values.size());
  }
  return out;
}

// The job's robust rule (RobustnessConfig.aggregation_rule) around `inner`, or `inner` for
// the weighted mean. A round holds at most kRobustHeldBytes of updates of `parameters`.
std::unique_ptr<aggregation::Strategy> WithJobRule(std::unique_ptr<aggregation::Strategy> inner,
                                                   const v1::RobustnessConfig& r,
                                                   int64_t parameters) {
  using Rule = aggregation::RobustRuleOptions::Rule;
  aggregation::RobustRuleOptions o;
  switch (r.aggregation_rule()) {
    case v1::RobustnessConfig::AGGREGATION_RULE_COORDINATE_MEDIAN:
      o.rule = Rule::kCoordinateMedian;
      break;
    case v1::RobustnessConfig::AGGREGATION_RULE_TRIMMED_MEAN:
      o.rule = Rule::kTrimmedMean;
      o.trim_fraction = r.trim_fraction();
      break;
    case v1::RobustnessConfig::AGGREGATION_RULE_MULTI_KRUM:
      o.rule = Rule::kMultiKrum;
      o.byzantine = r.krum_byzantine();
      o.selected = r.krum_selected();
      break;
    default:
      return inner;
  }
  const int64_t update_bytes =
      static_cast<int64_t>(sizeof(float)) * std::max<int64_t>(1, parameters);
  o.max_updates = std::max<int64_t>(1, aggregation::kRobustHeldBytes / update_bytes);
  if (o.rule == Rule::kMultiKrum) {
    o.max_updates = std::min(o.max_updates, aggregation::kMaxMultiKrumUpdates);
  }
  return aggregation::WithRobustRule(std::move(inner), o);
}


absl::Status CheckSecureAggregationSize(const v1::JobConfig& config, int64_t parameters) {
  if (config.privacy().secure_aggregation_threshold() > 0 &&
      parameters > kMaxSecureAggregationParameters) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: secure aggregation sends the masked update in one message: at most ",
        kMaxSecureAggregationParameters, " parameters, the model has ", parameters));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobModel> LanguageModelJob(const v1::JobConfig& config,
                                          const std::string& data_root) {
  const v1::LanguageModelJob& lm = config.language_model();
  FEDGE_ASSIGN_OR_RETURN(const std::string path, ResolveDataPath(data_root, lm.base_path(),
                                                                   "language_model.base_path"));
  // Read once: the bytes hashed, parsed and served to devices (FetchBaseModel) are the same,
  // whatever happens to the file afterwards.
  auto bytes = std::make_shared<std::string>();
  {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) return absl::NotFoundError(absl::StrCat("Coordinator: cannot open the base file ", path));
    const std::streamoff size = in.tellg();
    if (size < 0 || size >= model::kMaxModelFileBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("Coordinator: the base file ", path, " is over the 2 GiB limit"));
    }
    bytes->resize(static_cast<size_t>(size));
    in.seekg(0);
    if (!in.read(bytes->data(), size)) {
      return absl::DataLossError(absl::StrCat("Coordinator: reading the base file ", path, " failed"));
    }
  }
  const std::string sha256 = privacy::Sha256Hex(*bytes);
  if (!lm.base_sha256().empty() && lm.base_sha256() != sha256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: the base file ", lm.base_path(), " has SHA-256 ", sha256,
        ", the job's language_model.base_sha256 is ", lm.base_sha256(),
        " (was the file replaced?)"));
  }
  v1::ModelProto file;
  if (!file.ParseFromString(*bytes) || !file.spec().has_transformer()) {
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: language_model.base_path ",
                                                   lm.base_path(), " is not a language model file"));
  }
  absl::StatusOr<model::LanguageModel> base = model::LanguageModelFromProto(file);
  if (!base.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: language_model.base_path ",
                                                   lm.base_path(), ": ",
                                                   base.status().message()));
  }
  if (config.model_spec().has_transformer() &&
      !google::protobuf::util::MessageDifferencer::Equals(config.model_spec().transformer(),
                                                          file.spec().transformer())) {
    // (A stored job's model_spec also carries the adapters' spec, which only the config
    // decides: the transformer alone is compared.)
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: the base file ", lm.base_path(),
        " holds another architecture than the job's model_spec (was it replaced?)"));
  }
  if (lm.window() > base->model->config().context) {
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: language_model.window ",
                                                   lm.window(), " exceeds the base's context ",
                                                   base->model->config().context));
  }
  JobModel out;
  out.base_sha256 = sha256;
  out.base_file = std::move(bytes);
  if (!lm.full_parameters() && lm.lora().base_format() == v1::LoraSpec::BASE_FORMAT_INT4) {
    FEDGE_ASSIGN_OR_RETURN(const v1::ModelProto form, model::Int4DeviceForm(file));
    auto bytes = std::make_shared<std::string>();
    form.SerializeToString(bytes.get());
    out.base_int4_sha256 = privacy::Sha256Hex(*bytes);
    out.base_int4_form = std::move(bytes);
  }
  *out.model_spec.mutable_transformer() = file.spec().transformer();
  out.model_spec.set_name("transformer");
  if (lm.full_parameters()) {
    // Every parameter of the base is the central model.
    out.weights = WeightsFromProto(base->model->ToProto());
    out.num_parameters = base->model->num_parameters();
  } else {
    FEDGE_RETURN_IF_ERROR(
        base->model->AddLora(model::LoraConfigFromSpec(lm.lora()), config.init_seed()));
    FEDGE_RETURN_IF_ERROR(base->model->SetBaseFormat(
        lm.lora().base_format() == v1::LoraSpec::BASE_FORMAT_INT4 ? model::BaseFormat::kInt4
                                                                  : model::BaseFormat::kFp32));
    out.weights = WeightsFromProto(base->model->AdaptersToProto());
    out.num_parameters = base->model->num_adapter_parameters();
    *out.model_spec.mutable_lora() = lm.lora();
    out.model_spec.mutable_lora()->set_seed(config.init_seed());
  }
  out.language_model = std::make_shared<model::LanguageModel>(*std::move(base));
  FEDGE_ASSIGN_OR_RETURN(out.strategy, MakeStrategy(config.strategy()));
  out.strategy = WithJobRule(std::move(out.strategy), config.robustness(), out.num_parameters);
  FEDGE_RETURN_IF_ERROR(CheckSecureAggregationSize(config, out.num_parameters));
  return out;
}

}  // namespace

absl::StatusOr<JobModel> MakeJobModel(const v1::JobConfig& config,
                                      const std::string& data_root) {
  if (config.strategy().has_fed_cg()) return FedCgModel(config);
  if (config.has_language_model()) return LanguageModelJob(config, data_root);
  JobModel out;
  FEDGE_ASSIGN_OR_RETURN(out.strategy, MakeStrategy(config.strategy()));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> net,
                         model::Sequential::Create(config.model_spec()));
  net->InitParameters(config.init_seed());
  out.weights = WeightsFromProto(net->ToProto());
  out.num_parameters = net->num_parameters();
  out.strategy = WithJobRule(std::move(out.strategy), config.robustness(), out.num_parameters);
  FEDGE_RETURN_IF_ERROR(CheckSecureAggregationSize(config, out.num_parameters));
  return out;
}

}  // namespace fedge::server
