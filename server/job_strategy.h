// A job's strategy and starting model, from its config: FedAvg (and FedProx, whose μ only
// changes the devices' objective), FedAdam, FedYogi, or FedCG (whose central model is the
// shared classifier C and generator G only).
#ifndef FEDGE_SERVER_JOB_STRATEGY_H_
#define FEDGE_SERVER_JOB_STRATEGY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"
#include "model/language_model.h"
#include "proto/job.pb.h"

namespace fedge::server {

// Secure aggregation sends the masked update in one message: 4 bytes per parameter, under
// the 8 MiB gRPC message limit.
inline constexpr int64_t kMaxSecureAggregationParameters = 2'000'000;

struct JobModel {
  std::unique_ptr<aggregation::Strategy> strategy;
  aggregation::ModelWeights weights;  // round 0's central model (from init_seed)
  int64_t num_parameters = 0;
  // Language-model jobs: the central model is the adapters (`weights`); the base and its
  // tokenizer, with the adapters of init_seed and the job's base format, and the spec the
  // base file gives (what the job's model_spec becomes).
  std::shared_ptr<model::LanguageModel> language_model;
  v1::ModelSpec model_spec;
  std::string base_sha256;  // the base file's SHA-256 (hex): the job's language_model.base_sha256
  // The base file's bytes as read (once) from under the data root: what was hashed and
  // parsed, and what devices are sent.
  std::shared_ptr<const std::string> base_file;
  // An int4 base (LoRA, base_format INT4): the base's int4 device form, serialized, and its
  // SHA-256 (what devices fetch instead of the file).
  std::shared_ptr<const std::string> base_int4_form;
  std::string base_int4_sha256;
};

// REQUIRES: `config` validated (ValidateJobConfig). A language-model job's base file is read
// under `data_root` (ResolveDataPath). INVALID_ARGUMENT for a strategy's bad options, a model
// spec that does not build, secure aggregation of a model over
// kMaxSecureAggregationParameters, or a base file that is not a language model (or, for a
// job whose model_spec already names one, not the same architecture, or one whose
// language_model.base_sha256 is not the file's); NOT_FOUND / DATA_LOSS for the file.
absl::StatusOr<JobModel> MakeJobModel(const v1::JobConfig& config,
                                      const std::string& data_root = "");

}  // namespace fedge::server

#endif  // FEDGE_SERVER_JOB_STRATEGY_H_
