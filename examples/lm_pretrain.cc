// Central pre-training of fedge's language model on the Brown corpus's non-fiction genres:
// the base that devices fine-tune on fiction (docs/language-models.md).
//
//   build/bin/lm_pretrain --out lm_base.pb
//
// Trains a byte-level BPE tokenizer on the non-fiction training text (or loads one with
// --tokenizer), then the transformer with Adam (warm-up, cosine decay, clipping), both cores
// by default. Prints progress every --report-every steps, the perplexity on the held-out
// non-fiction and fiction text every --eval-every steps and at the end, a sample, and saves
// the model with its tokenizer (one ModelProto) to --out.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
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
#include "data/bpe.h"
#include "data/brown.h"
#include "data/token_windows.h"
#include "model/language_model.h"
#include "model/lm_training.h"
#include "model/serialize.h"

ABSL_FLAG(std::string, corpus, "", "the Brown corpus directory (default: the datasets cache)");
ABSL_FLAG(std::string, out, "lm_base.pb", "where to save the model and its tokenizer");
ABSL_FLAG(std::string, tokenizer, "",
          "a tokenizer file (fedge-bpe) to use instead of training one");
ABSL_FLAG(std::string, save_tokenizer, "", "also write the tokenizer to this file");
ABSL_FLAG(int, vocab, 4096, "tokenizer vocabulary when training one");
ABSL_FLAG(int, layers, 4, "transformer blocks");
ABSL_FLAG(int, dim, 256, "model width d");
ABSL_FLAG(int, heads, 4, "attention heads");
ABSL_FLAG(int, ffn, 768, "SwiGLU hidden width");
ABSL_FLAG(int, context, 128, "context (training window) in tokens");
ABSL_FLAG(int, batch, 16, "windows per step");
ABSL_FLAG(int64_t, steps, 3000, "training steps");
ABSL_FLAG(double, lr, 3e-3, "peak learning rate");
ABSL_FLAG(int64_t, warmup, 200, "warm-up steps");
ABSL_FLAG(double, clip, 1.0, "gradient-norm clip (0: none)");
ABSL_FLAG(int, threads, 0, "training threads (0: every core)");
ABSL_FLAG(uint64_t, seed, 1, "initialization and sampling seed");
ABSL_FLAG(int64_t, report_every, 50, "progress line every N steps");
ABSL_FLAG(int64_t, eval_every, 1000, "held-out perplexity every N steps (0: only at the end)");

namespace fedge {
namespace {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("lm_pretrain: cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Texts(const std::vector<data::BrownDocument>& docs) {
  std::vector<std::string> out;
  for (const auto& d : docs) out.push_back(d.text);
  return out;
}

absl::StatusOr<data::TokenWindows> Windows(const data::BpeTokenizer& tok,
                                           const std::vector<data::BrownDocument>& docs,
                                           int len) {
  return data::TokenWindows::Create(data::EncodeDocuments(tok, docs), len);
}

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_corpus).empty() ? data::DefaultBrownDir()
                                                              : absl::GetFlag(FLAGS_corpus);
  FEDGE_ASSIGN_OR_RETURN(std::vector<data::BrownDocument> docs, data::LoadBrownCorpus(dir));
  const data::BrownSplit split = data::SplitBrown(docs);
  std::printf("lm_pretrain: %zu documents from %s: %zu non-fiction to pre-train on, %zu fiction "
              "held for fine-tuning\n",
              docs.size(), dir.c_str(), split.pretrain.size(), split.finetune.size());

  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<data::BpeTokenizer> tok = absl::InternalError("unset");
  if (const std::string path = absl::GetFlag(FLAGS_tokenizer); !path.empty()) {
    FEDGE_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
    tok = data::BpeTokenizer::Parse(text);
  } else {
    const std::vector<std::string> texts = Texts(split.pretrain);
    std::vector<std::string_view> views(texts.begin(), texts.end());
    tok = data::BpeTokenizer::Train(views, absl::GetFlag(FLAGS_vocab));
  }
  FEDGE_RETURN_IF_ERROR(tok.status());
  std::printf("tokenizer: %d tokens (%.1fs)\n", tok->vocab_size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (const std::string path = absl::GetFlag(FLAGS_save_tokenizer); !path.empty()) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << tok->Serialize();
    if (!out.flush()) return absl::UnavailableError("lm_pretrain: cannot write " + path);
  }

  model::TransformerConfig c;
  c.vocab_size = tok->vocab_size();
  c.dim = absl::GetFlag(FLAGS_dim);
  c.num_layers = absl::GetFlag(FLAGS_layers);
  c.num_heads = absl::GetFlag(FLAGS_heads);
  c.ffn_dim = absl::GetFlag(FLAGS_ffn);
  c.context = absl::GetFlag(FLAGS_context);
  FEDGE_ASSIGN_OR_RETURN(auto lm, model::TransformerLM::Create(c));
  lm->InitParameters(absl::GetFlag(FLAGS_seed));

  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows train, Windows(*tok, split.pretrain, c.context));
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows nonfiction_test,
                         Windows(*tok, split.pretrain_test, c.context));
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows fiction_test,
                         Windows(*tok, split.finetune_test, c.context));

  model::LmTrainOptions o;
  o.batch = absl::GetFlag(FLAGS_batch);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.warmup_steps = absl::GetFlag(FLAGS_warmup);
  o.clip_norm = static_cast<float>(absl::GetFlag(FLAGS_clip));
  o.seed = absl::GetFlag(FLAGS_seed);
  o.threads = absl::GetFlag(FLAGS_threads);
  if (o.threads <= 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
  o.threads = std::min(o.threads, o.batch);
  const double epochs = static_cast<double>(o.steps) * o.batch * c.context / train.size();
  std::printf("model: %lld parameters (%d layers, d %d, %d heads, SwiGLU %d, context %d); "
              "%lld training tokens; %lld steps of %d windows = %.2f epochs on %d threads\n",
              static_cast<long long>(lm->num_parameters()), c.num_layers, c.dim, c.num_heads,
              c.ffn_dim, c.context, static_cast<long long>(train.size()),
              static_cast<long long>(o.steps), o.batch, epochs, o.threads);
  std::fflush(stdout);

  auto evaluate = [&](const char* when) {
    const model::LmEvaluation nf = model::EvaluateLanguageModel(*lm, nonfiction_test);
    const model::LmEvaluation fi = model::EvaluateLanguageModel(*lm, fiction_test);
    std::printf("%s: held-out perplexity non-fiction %.2f (%lld tokens), fiction %.2f "
                "(%lld tokens)\n",
                when, nf.perplexity, static_cast<long long>(nf.tokens), fi.perplexity,
                static_cast<long long>(fi.tokens));
    std::fflush(stdout);
  };
  // Trains in segments between evaluations; the schedule spans every step.
  const int64_t eval_every = absl::GetFlag(FLAGS_eval_every);
  const int64_t report_every = absl::GetFlag(FLAGS_report_every);
  start = std::chrono::steady_clock::now();
  auto on_progress = [&](const model::LmTrainProgress& p) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta = p.step > 0 ? elapsed / p.step * (o.steps - p.step) : 0;
    std::printf("step %lld/%lld  loss %.4f  lr %.2e  %.0f tokens/s  eta %.0fs\n",
                static_cast<long long>(p.step), static_cast<long long>(o.steps), p.loss,
                p.learning_rate, p.tokens_per_second, eta);
    std::fflush(stdout);
    if (eval_every > 0 && p.step % eval_every == 0 && p.step < o.steps) {
      evaluate(absl::StrFormat("step %lld", static_cast<long long>(p.step)).c_str());
    }
  };
  FEDGE_RETURN_IF_ERROR(
      model::TrainLanguageModel(*lm, train, o, report_every, on_progress).status());
  evaluate("final");
  model::LanguageModel bundle{std::move(lm), std::move(*tok)};
  model::SampleOptions so;
  so.max_tokens = 60;
  so.seed = absl::GetFlag(FLAGS_seed);
  FEDGE_ASSIGN_OR_RETURN(std::string sample, model::SampleText(bundle, "The", so));
  std::printf("sample: The%s\n", sample.c_str());
  const std::string out = absl::GetFlag(FLAGS_out);
  FEDGE_RETURN_IF_ERROR(
      model::SaveModel(out, model::LanguageModelToProto(*bundle.model, bundle.tokenizer)));
  std::printf("saved the model and its tokenizer to %s\n", out.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Pre-trains the language model on the Brown corpus's non-fiction.\n"
      "  lm_pretrain --out lm_base.pb [--steps 3000] [--threads 2]");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "lm_pretrain: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
