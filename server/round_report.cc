#include "server/round_report.h"

#include <filesystem>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "data/shard.h"
#include "model/lm_training.h"
#include "data/idx_reader.h"
#include "data/preprocessing.h"
#include "server/job_config.h"
#include "absl/strings/match.h"
#include "base/log.h"
#include "base/text.h"

namespace fedge::server {

absl::StatusOr<std::string> ResolveDataPath(const std::string& data_root,
                                            const std::string& data_path,
                                            absl::string_view field) {
  namespace fs = std::filesystem;
  if (data_root.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: ", field, " '", base::Printable(data_path, 256),
        "' needs a data root (fedge-coordinator --data-root; fedge-sim: SimConfig.data_root); "
        "there is none"));
  }
  const fs::path relative(data_path);
  bool dots = false;
  for (const fs::path& part : relative) dots = dots || part == "..";
  if (data_path.empty() || relative.is_absolute() || dots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: ", field, " '", base::Printable(data_path, 256),
        "' must be a path relative to the data root, without '..'"));
  }
  std::error_code ec;
  const fs::path root = fs::weakly_canonical(fs::path(data_root), ec);
  const fs::path resolved = ec ? fs::path() : fs::weakly_canonical(root / relative, ec);
  const std::string r = resolved.string();
  std::string prefix = root.string();
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  const bool inside = prefix == "/" || r == prefix || absl::StartsWith(r, prefix + "/");
  if (ec || !inside) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: ", field, " '", base::Printable(data_path, 256),
        "' leads outside the data root ", data_root));
  }
  return r;
}

absl::StatusOr<std::shared_ptr<const data::Dataset>> LoadEvaluationData(
    const v1::JobConfig& config, const std::string& data_root) {
  const v1::EvaluationConfig& e = config.evaluation();
  data::Dataset test;
  // The test split only: loading the training split as well (as LoadFashionMnist does) took
  // the coordinator's peak memory from ~110 MB to ~350 MB when a job started.
  if (!e.data_path().empty()) {
    FEDGE_ASSIGN_OR_RETURN(const std::string dir, ResolveDataPath(data_root, e.data_path()));
    FEDGE_ASSIGN_OR_RETURN(test, data::LoadIdxDataset(dir + "/t10k-images-idx3-ubyte.gz",
                                                      dir + "/t10k-labels-idx1-ubyte.gz", 10,
                                                      data::IdxStorage::kU8));
  } else if (e.dataset().empty() || e.dataset() == kDefaultEvaluationDataset) {
    FEDGE_ASSIGN_OR_RETURN(test, data::LoadFashionMnistTest(data::kFashionMnistDir,
                                                            data::IdxStorage::kU8));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("Coordinator: unknown evaluation dataset '", e.dataset(), "'"));
  }
  if (e.max_examples() > 0 && e.max_examples() < test.num_examples) {
    // The first max_examples, in place (no second copy).
    test.num_examples = e.max_examples();
    const size_t values = static_cast<size_t>(test.num_examples) * test.feature_size();
    test.features_u8.resize(values);  // 8-bit storage, as loaded
    test.features_u8.shrink_to_fit();
    test.labels.resize(static_cast<size_t>(test.num_examples));
    test.labels.shrink_to_fit();
  }
  FEDGE_RETURN_IF_ERROR(data::Preprocess(config.preprocessing(), test));
  // Pixels in [0, 1] (no standardization) stay 8-bit in memory, a quarter of the floats:
  // Evaluate converts a batch at a time. Standardization made floats.
  return std::make_shared<const data::Dataset>(std::move(test));
}

absl::StatusOr<std::unique_ptr<RoundReport>> RoundReport::Create(
    const v1::JobConfig& config, const RoundPlanner& planner,
    std::shared_ptr<const data::Dataset> data, const std::string& data_root) {
  std::unique_ptr<RoundReport> report(new RoundReport(config, planner));
  FEDGE_ASSIGN_OR_RETURN(report->net_, model::Sequential::Create(config.model_spec()));
  // Each smaller tier's leading sub-model is evaluated on its own every round (random
  // subsets have no fixed sub-model to evaluate).
  const v1::SubModelConfig& sub = config.sub_models();
  for (const RoundPlanner::Tier& tier : planner.tiers()) {
    std::unique_ptr<model::Sequential> net;
    if (tier.width_ratio < 1 && sub.extraction() != v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET) {
      FEDGE_ASSIGN_OR_RETURN(net, model::Sequential::Create(
                                      sub.scaler() ? tier.leading->scaled_sub_spec() : tier.spec));
    }
    report->tier_nets_.push_back(std::move(net));
  }
  if (data == nullptr) {
    FEDGE_ASSIGN_OR_RETURN(data, LoadEvaluationData(config, data_root));
  }
  if (static_cast<int>(data->feature_size()) != report->net_->input_size() ||
      data->num_classes != report->net_->output_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: evaluation data has ", data->feature_size(), " features and ",
        data->num_classes, " classes; the model takes ", report->net_->input_size(), " and ",
        report->net_->output_size()));
  }
  report->data_ = std::move(data);
  return report;
}

std::unique_ptr<RoundReport> RoundReport::WithoutEvaluation(const v1::JobConfig& config,
                                                            const RoundPlanner& planner) {
  return std::unique_ptr<RoundReport>(new RoundReport(config, planner));
}

absl::StatusOr<std::unique_ptr<RoundReport>> RoundReport::ForLanguageModel(
    const v1::JobConfig& config, const RoundPlanner& planner,
    std::shared_ptr<model::LanguageModel> lm, const std::string& data_root,
    std::shared_ptr<const std::vector<data::TextDocument>> text) {
  std::unique_ptr<RoundReport> report(new RoundReport(config, planner));
  report->lm_ = std::move(lm);
  const v1::LanguageModelJob& job = config.language_model();
  if (text == nullptr) {
    if (job.eval_text_path().empty()) return report;
    FEDGE_ASSIGN_OR_RETURN(const std::string path,
                           ResolveDataPath(data_root, job.eval_text_path(),
                                           "language_model.eval_text_path"));
    FEDGE_ASSIGN_OR_RETURN(std::vector<data::TextDocument> docs, data::ReadTextShard(path));
    text = std::make_shared<const std::vector<data::TextDocument>>(std::move(docs));
  }
  const int window = job.window() > 0 ? job.window() : report->lm_->model->config().context;
  std::vector<int32_t> tokens = data::EncodeDocuments(report->lm_->tokenizer, *text);
  const int64_t keep = config.evaluation().max_examples();
  if (keep > 0 && static_cast<int64_t>(tokens.size()) > keep * window + 1) {
    tokens.resize(static_cast<size_t>(keep * window + 1));
  }
  absl::StatusOr<data::TokenWindows> windows = data::TokenWindows::Create(std::move(tokens), window);
  if (!windows.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: language_model.eval_text_path ",
                                                   job.eval_text_path(), ": ",
                                                   windows.status().message()));
  }
  report->eval_windows_ = std::make_unique<data::TokenWindows>(*std::move(windows));
  return report;
}

absl::Status RoundReport::Evaluate(const v1::ModelProto& model, int64_t round,
                                   v1::RoundMetrics* m) {
  const int every_lm = std::max(1, config_.evaluation().every_rounds());
  if (lm_ != nullptr) {
    if (eval_windows_ == nullptr || (round % every_lm != 0 && round != config_.rounds())) {
      return absl::OkStatus();
    }
    const auto t0 = std::chrono::steady_clock::now();
    // The round's adapters on the base, or (full-parameter fine-tuning) its parameters.
    FEDGE_RETURN_IF_ERROR(lm_->model->has_lora() ? lm_->model->SetAdapters(model)
                                                 : lm_->model->SetParameters(model));
    const model::LmEvaluation e = model::EvaluateLanguageModel(
        *lm_->model, *eval_windows_, std::max(1, config_.evaluation().batch_size()));
    m->set_evaluated(true);
    m->set_test_loss(e.loss);
    m->set_test_perplexity(e.perplexity);
    m->set_eval_tokens(e.tokens);
    m->set_evaluation_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return absl::OkStatus();
  }
  const std::vector<RoundPlanner::Tier>& tiers = planner_.tiers();
  std::vector<std::optional<model::EvalResult>> tier_eval(tiers.size());
  const int every = std::max(1, config_.evaluation().every_rounds());
  if (data_ != nullptr && (round % every == 0 || round == config_.rounds())) {
    const auto t0 = std::chrono::steady_clock::now();
    FEDGE_RETURN_IF_ERROR(net_->SetParameters(model));
    const int batch = std::max(1, config_.evaluation().batch_size());
    const model::EvalResult r = model::Evaluate(*net_, *data_, model::ComputeMode::kFp32, batch);
    m->set_evaluated(true);
    m->set_test_accuracy(r.accuracy);
    m->set_test_loss(r.loss);
    // Each smaller tier's sub-model, cut from the new central model, on its own.
    for (size_t i = 0; i < tiers.size(); ++i) {
      if (tier_nets_[i] == nullptr) continue;
      FEDGE_ASSIGN_OR_RETURN(v1::ModelProto sub, tiers[i].leading->Slice(model));
      FEDGE_RETURN_IF_ERROR(tier_nets_[i]->SetParameters(sub));
      tier_eval[i] = model::Evaluate(*tier_nets_[i], *data_, model::ComputeMode::kFp32, batch);
    }
    m->set_evaluation_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  for (size_t i = 0; i < tiers.size(); ++i) {
    v1::TierRoundMetrics* t = m->add_tiers();
    t->set_tier(tiers[i].name);
    t->set_width_ratio(tiers[i].width_ratio);
    if (m->evaluated() && (tier_eval[i].has_value() || tiers[i].width_ratio >= 1)) {
      t->set_evaluated(true);
      const bool own = tier_eval[i].has_value();
      t->set_test_accuracy(own ? tier_eval[i]->accuracy : m->test_accuracy());
      t->set_test_loss(own ? tier_eval[i]->loss : m->test_loss());
    }
  }
  return absl::OkStatus();
}

void RoundReport::AddClient(const v1::ClientRoundMetrics& client, int tier,
                            v1::RoundMetrics* m) {
  *m->add_clients() = client;
  if (tier < 0 || tier >= m->tiers_size()) return;
  v1::TierRoundMetrics* t = m->mutable_tiers(tier);
  t->set_sampled(t->sampled() + 1);
  t->set_bytes_down(t->bytes_down() + client.bytes_down());
  if (client.outcome() == v1::ClientRoundMetrics::OUTCOME_ACCEPTED) {
    t->set_participants(t->participants() + 1);
    t->set_bytes_up(t->bytes_up() + client.bytes_up());
  }
}

void RoundReport::LogDone(const std::string& job_id, const v1::RoundMetrics& m) {
  if (m.has_fed_cg()) {
    FEDGE_LOG(INFO) << "Coordinator: job " << job_id << " round " << m.round() << " done: "
                    << m.participants() << "/" << m.sampled() << " clients, FedCG client accuracy "
                    << m.fed_cg().client_accuracy() << " (" << m.fed_cg().clients_evaluated()
                    << " devices), distillation KL " << m.fed_cg().first_kl() << " -> "
                    << m.fed_cg().last_kl() << ", synthetic accuracy "
                    << m.fed_cg().synthetic_accuracy();
  } else if (m.test_perplexity() > 0) {
    FEDGE_LOG(INFO) << "Coordinator: job " << job_id << " round " << m.round() << " done: "
                    << m.participants() << "/" << m.sampled() << " clients, test perplexity "
                    << m.test_perplexity() << " (" << m.eval_tokens() << " tokens)";
  } else {
    FEDGE_LOG(INFO) << "Coordinator: job " << job_id << " round " << m.round() << " done: "
                    << m.participants() << "/" << m.sampled() << " clients, test accuracy "
                    << m.test_accuracy() << ", loss " << m.test_loss();
  }
}

}  // namespace fedge::server
