// Fine-tuning the pre-trained language model on the Brown corpus's fiction in one process:
// the central reference for the federated fine-tuning runs (docs/language-models.md).
//
//   build/bin/lm_finetune --base lm_base.pb --lora-rank 8 --base-format int4
//   build/bin/lm_finetune --base lm_base.pb --full          # every parameter, fp32
//
// Prints the held-out fiction (and non-fiction) perplexity before and after, the adapters'
// size against the base's, and optionally saves the adapters (--out).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "data/brown.h"
#include "data/token_windows.h"
#include "model/language_model.h"
#include "model/lm_training.h"
#include "model/serialize.h"

ABSL_FLAG(std::string, corpus, "", "the Brown corpus directory (default: the datasets cache)");
ABSL_FLAG(std::string, base, "lm_base.pb", "the pre-trained model file (lm_pretrain --out)");
ABSL_FLAG(std::string, out, "", "save the adapters (or, with --full, the model) here");
ABSL_FLAG(bool, full, false, "fine-tune every parameter (fp32) instead of LoRA adapters");
ABSL_FLAG(int, lora_rank, 8, "LoRA rank");
ABSL_FLAG(double, lora_alpha, 16, "LoRA alpha (scale alpha/rank)");
ABSL_FLAG(std::string, lora_targets, "all", "attention, mlp or all");
ABSL_FLAG(bool, lora_output, false, "also an adapter on the output head");
ABSL_FLAG(bool, lora_freeze_a, false, "FFA-LoRA: keep A at its random start, train only B");
ABSL_FLAG(std::string, base_format, "fp32", "the frozen base's products: fp32 or int4");
ABSL_FLAG(int, batch, 16, "windows per step");
ABSL_FLAG(int64_t, steps, 400, "training steps");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(int64_t, warmup, 20, "warm-up steps");
ABSL_FLAG(int, threads, 0, "training threads (0: every core)");
ABSL_FLAG(uint64_t, seed, 1, "adapter initialization and sampling seed");

namespace fedge {
namespace {

absl::StatusOr<data::TokenWindows> Windows(const data::BpeTokenizer& tok,
                                           const std::vector<data::BrownDocument>& docs,
                                           int len) {
  return data::TokenWindows::Create(data::EncodeDocuments(tok, docs), len);
}

absl::Status Run() {
  FEDGE_ASSIGN_OR_RETURN(v1::ModelProto file, model::LoadModel(absl::GetFlag(FLAGS_base)));
  FEDGE_ASSIGN_OR_RETURN(model::LanguageModel lm, model::LanguageModelFromProto(file));
  const int64_t base_bytes = static_cast<int64_t>(file.ByteSizeLong());
  const std::string dir = absl::GetFlag(FLAGS_corpus).empty() ? data::DefaultBrownDir()
                                                              : absl::GetFlag(FLAGS_corpus);
  FEDGE_ASSIGN_OR_RETURN(std::vector<data::BrownDocument> docs, data::LoadBrownCorpus(dir));
  const data::BrownSplit split = data::SplitBrown(docs);
  const int len = lm.model->config().context;
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows train, Windows(lm.tokenizer, split.finetune, len));
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows fiction_test,
                         Windows(lm.tokenizer, split.finetune_test, len));
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows nonfiction_test,
                         Windows(lm.tokenizer, split.pretrain_test, len));

  const bool full = absl::GetFlag(FLAGS_full);
  std::string what = "full-parameter fine-tuning (fp32)";
  if (!full) {
    model::LoraConfig lora;
    lora.rank = absl::GetFlag(FLAGS_lora_rank);
    lora.alpha = static_cast<float>(absl::GetFlag(FLAGS_lora_alpha));
    const std::string targets = absl::GetFlag(FLAGS_lora_targets);
    if (targets != "all" && targets != "attention" && targets != "mlp") {
      return absl::InvalidArgumentError("--lora-targets must be attention, mlp or all");
    }
    lora.attention = targets != "mlp";
    lora.mlp = targets != "attention";
    lora.freeze_a = absl::GetFlag(FLAGS_lora_freeze_a);
    lora.output = absl::GetFlag(FLAGS_lora_output);
    FEDGE_RETURN_IF_ERROR(lm.model->AddLora(lora, absl::GetFlag(FLAGS_seed)));
    const std::string format = absl::GetFlag(FLAGS_base_format);
    if (format != "fp32" && format != "int4") {
      return absl::InvalidArgumentError("--base-format must be fp32 or int4");
    }
    FEDGE_RETURN_IF_ERROR(lm.model->SetBaseFormat(format == "int4" ? model::BaseFormat::kInt4
                                                                   : model::BaseFormat::kFp32));
    // As a device holds it: the int4 blocks only.
    if (format == "int4") FEDGE_RETURN_IF_ERROR(lm.model->ReleaseFp32Base());
    what = absl::StrFormat("LoRA%s rank %d, alpha %g, on %s%s, %s base: %lld adapter values "
                           "(%lld bytes as a file, %.2f%% of the base file's %lld)",
                           lora.freeze_a ? " (A frozen)" : "", lora.rank, lora.alpha, targets,
                           lora.output ? " and the output head" : "", format,
                           static_cast<long long>(lm.model->num_adapter_parameters()),
                           static_cast<long long>(lm.model->AdaptersToProto().ByteSizeLong()),
                           100.0 * lm.model->AdaptersToProto().ByteSizeLong() / base_bytes,
                           static_cast<long long>(base_bytes));
  }
  std::printf("lm_finetune: %s\n%lld fiction training tokens (%zu documents)\n", what.c_str(),
              static_cast<long long>(train.size()), split.finetune.size());
  auto evaluate = [&](const char* when) {
    const model::LmEvaluation fi = model::EvaluateLanguageModel(*lm.model, fiction_test);
    const model::LmEvaluation nf = model::EvaluateLanguageModel(*lm.model, nonfiction_test);
    std::printf("%s: held-out perplexity fiction %.2f, non-fiction %.2f\n", when, fi.perplexity,
                nf.perplexity);
    std::fflush(stdout);
    return fi.perplexity;
  };
  const double before = evaluate("before");

  model::LmTrainOptions o;
  o.batch = absl::GetFlag(FLAGS_batch);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.warmup_steps = absl::GetFlag(FLAGS_warmup);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.threads = absl::GetFlag(FLAGS_threads);
  if (o.threads <= 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
  o.threads = std::min(o.threads, o.batch);
  auto on_progress = [&](const model::LmTrainProgress& p) {
    std::printf("step %lld/%lld  loss %.4f  lr %.2e  %.0f tokens/s\n",
                static_cast<long long>(p.step), static_cast<long long>(o.steps), p.loss,
                p.learning_rate, p.tokens_per_second);
    std::fflush(stdout);
  };
  FEDGE_RETURN_IF_ERROR(model::TrainLanguageModel(*lm.model, train, o, 50, on_progress).status());
  const double after = evaluate("after");
  std::printf("fiction perplexity %.2f -> %.2f (%+.1f%%)\n", before, after,
              100.0 * (after - before) / before);
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    FEDGE_RETURN_IF_ERROR(model::SaveModel(
        out, full ? model::LanguageModelToProto(*lm.model, lm.tokenizer)
                  : lm.model->AdaptersToProto()));
    std::printf("saved %s to %s\n", full ? "the model" : "the adapters", out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Fine-tunes the pre-trained language model on the Brown corpus's fiction.\n"
      "  lm_finetune --base lm_base.pb --lora-rank 8 --base-format int4");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "lm_finetune: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
