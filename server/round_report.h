// A round's report (a room of server::Coordinator): the central evaluation of the model a
// round produced, each smaller tier's sub-model evaluated on its own, and the per-tier and
// per-client figures of RoundMetrics.
//
//   FEDGE_ASSIGN_OR_RETURN(auto report, RoundReport::Create(config, planner, data));
//   FEDGE_RETURN_IF_ERROR(report->Evaluate(new_model, round, &metrics));  // when due
//   report->AddClient(client_metrics, tier, &metrics);                     // each sampled client
//
// Evaluation runs every evaluation.every_rounds rounds and at the last round, on the job's
// evaluation data (EvaluationConfig: Fashion-MNIST's test split by default, preprocessed as
// the job's devices preprocess), in fp32, at evaluation.batch_size. Random-subset tiers have
// no fixed sub-model and report the central figures; so does the full tier. Jobs without
// a central model to evaluate (FedCG: the extractors stay on the devices) report only what
// their strategy adds (aggregation::Strategy::ReportRound).
//
// Thread safety: none; one round is reported at a time.
#ifndef FEDGE_SERVER_ROUND_REPORT_H_
#define FEDGE_SERVER_ROUND_REPORT_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data/token_windows.h"
#include "model/language_model.h"
#include "model/sequential.h"
#include "model/trainer.h"
#include "proto/job.pb.h"
#include "server/round_planner.h"

namespace fedge::server {

class RoundReport {
 public:
  // `data`: the evaluation data, already preprocessed; null: the job's EvaluationConfig is
  // loaded and preprocessed. `planner` must outlive the report. INVALID_ARGUMENT for data
  // whose features or classes do not fit the model, NOT_FOUND / DATA_LOSS for data files.
  static absl::StatusOr<std::unique_ptr<RoundReport>> Create(
      const v1::JobConfig& config, const RoundPlanner& planner,
      std::shared_ptr<const data::Dataset> data, const std::string& data_root = "");
  // The log line of a completed round: its participants and accuracy (FedCG: the devices'
  // accuracy and the distillation's KL).
  static void LogDone(const std::string& job_id, const v1::RoundMetrics& m);
  // A report without central evaluation (FedCG).
  static std::unique_ptr<RoundReport> WithoutEvaluation(const v1::JobConfig& config,
                                                        const RoundPlanner& planner);
  // A language-model job's report: the round's adapters set on `lm` (the job's base with its
  // adapters, shared with the job) and scored on the held-out text of
  // `text` when not null, else language_model.eval_text_path (a text shard under
  // `data_root`), encoded with the base's tokenizer into windows of the job's window,
  // evaluation.batch_size windows at a time; evaluation.max_examples > 0 keeps that many
  // windows. Neither: no evaluation. Errors: the path's (ResolveDataPath) and the shard's
  // (ReadTextShard); INVALID_ARGUMENT for text shorter than one window.
  static absl::StatusOr<std::unique_ptr<RoundReport>> ForLanguageModel(
      const v1::JobConfig& config, const RoundPlanner& planner,
      std::shared_ptr<model::LanguageModel> lm, const std::string& data_root,
      std::shared_ptr<const std::vector<data::TextDocument>> text = nullptr);

  // Evaluates `model` (the round's new central model) when round `round` is due, and adds
  // one TierRoundMetrics per tier (evaluated ones with their figures) to `metrics`. A
  // language model reports test_loss (nats per token), test_perplexity and eval_tokens.
  absl::Status Evaluate(const v1::ModelProto& model, int64_t round, v1::RoundMetrics* metrics);
  // Adds one sampled client's figures (`tier`: index into the planner's tiers, -1 none).
  // REQUIRES: Evaluate ran for `metrics`.
  static void AddClient(const v1::ClientRoundMetrics& client, int tier,
                        v1::RoundMetrics* metrics);

 private:
  RoundReport(const v1::JobConfig& config, const RoundPlanner& planner)
      : config_(config), planner_(planner) {}

  const v1::JobConfig config_;
  const RoundPlanner& planner_;
  std::shared_ptr<const data::Dataset> data_;   // null: no central evaluation
  std::unique_ptr<model::Sequential> net_;      // the central model's architecture
  std::vector<std::unique_ptr<model::Sequential>> tier_nets_;  // per tier (leading, r < 1)
  // Language-model jobs.
  std::shared_ptr<model::LanguageModel> lm_;
  std::unique_ptr<data::TokenWindows> eval_windows_;  // null: no central evaluation
};

// The evaluation data an EvaluationConfig names, preprocessed as the job says; a data_path
// is resolved under `data_root` (ResolveDataPath). Errors: an unknown dataset, a path
// outside the data root, a file that cannot be read.
absl::StatusOr<std::shared_ptr<const data::Dataset>> LoadEvaluationData(
    const v1::JobConfig& config, const std::string& data_root);

// A job's data path confined to the coordinator's data root (--data-root): `data_path` is
// relative to it, with no ".." component, and after resolving symbolic links it stays
// inside it. INVALID_ARGUMENT otherwise, or when there is no data root: a job never makes
// the coordinator open a path of the caller's choosing. Errors name `field`, the job's field
// the path came from.
absl::StatusOr<std::string> ResolveDataPath(const std::string& data_root,
                                            const std::string& data_path,
                                            absl::string_view field = "evaluation.data_path");

}  // namespace fedge::server

#endif  // FEDGE_SERVER_ROUND_REPORT_H_
