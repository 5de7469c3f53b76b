// A text device's memory for a language-model task, stage by stage: the device round's own
// path (client::LanguageModelForTask on the base file, then TrainLanguageModelTask on
// random tokens), with the process's peak RSS (VmHWM) and the heap in use (mallinfo2) after
// each stage, against EstimateLoraRoundMemoryBytes, the figure a device's admission
// checks its budget with.
//
//   build/bin/lm_device_memory --base lm_base.pb --batch 2 --steps 3
//
// The runtime's own share (gRPC, TLS, threads) is not here: fedge-client reports its whole
// peak with every update.
#include <malloc.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "base/memory.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/device_round.h"
#include "client/memory_budget.h"
#include "data/token_windows.h"
#include "model/serialize.h"
#include "model/transformer.h"

ABSL_FLAG(std::string, base, "lm_base.pb", "the base model file (lm_pretrain)");
ABSL_FLAG(int, batch, 2, "windows per step");
ABSL_FLAG(int, window, 128, "tokens per window");
ABSL_FLAG(int, steps, 3, "training steps");
ABSL_FLAG(int, rank, 8, "LoRA rank (attention, MLP and the output head)");
ABSL_FLAG(bool, int4, true, "int4 base (false: fp32)");
ABSL_FLAG(bool, checkpoint, false,
          "activation checkpointing (what a device chooses when only so the task fits its "
          "budget)");

namespace fedge {
namespace {

void Report(const char* stage) {
  const struct mallinfo2 m = mallinfo2();
  std::printf("%-34s peak RSS %6.1f MB   heap in use %6.1f MB\n", stage,
              static_cast<double>(client::PeakRssBytes()) / (1 << 20),
              static_cast<double>(m.uordblks + m.hblkhd) / (1 << 20));
}

absl::Status Run() {
  Report("start");
  v1::TaskHeader task;
  v1::TransformerSpec spec;
  {
    FEDGE_ASSIGN_OR_RETURN(const v1::ModelProto file, model::LoadModel(absl::GetFlag(FLAGS_base)));
    spec = file.spec().transformer();
  }
  Report("base file read (its spec kept)");
  *task.mutable_model_spec()->mutable_transformer() = spec;
  v1::LoraSpec& lora = *task.mutable_language_model()->mutable_lora();
  lora.set_rank(absl::GetFlag(FLAGS_rank));
  lora.set_alpha(2.0f * absl::GetFlag(FLAGS_rank));
  lora.set_attention(true);
  lora.set_mlp(true);
  lora.set_output(true);
  lora.set_base_format(absl::GetFlag(FLAGS_int4) ? v1::LoraSpec::BASE_FORMAT_INT4
                                                 : v1::LoraSpec::BASE_FORMAT_FP32);
  task.mutable_language_model()->set_window(absl::GetFlag(FLAGS_window));
  task.mutable_training()->set_optimizer(v1::OPTIMIZER_KIND_ADAM);
  task.mutable_training()->set_learning_rate(1e-3);
  task.mutable_training()->set_batch_size(absl::GetFlag(FLAGS_batch));
  task.mutable_training()->set_max_steps(absl::GetFlag(FLAGS_steps));
  task.mutable_training()->set_epochs(1000);
  const model::TransformerConfig config = model::TransformerConfigFromSpec(spec);
  FEDGE_ASSIGN_OR_RETURN(
      std::unique_ptr<model::TransformerLM> device,
      client::LanguageModelForTask(task, [] { return model::LoadModel(absl::GetFlag(FLAGS_base)); }));
  Report("device model (base + adapters)");
  const v1::ModelProto adapters = device->AdaptersToProto();
  base::Rng rng(1);
  std::vector<int32_t> tokens(20000);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.UniformInt(config.vocab_size));
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows text,
                         data::TokenWindows::Create(std::move(tokens), absl::GetFlag(FLAGS_window)));
  Report("task adapters and text");
  const bool checkpoint = absl::GetFlag(FLAGS_checkpoint);
  device->SetActivationCheckpointing(checkpoint);
  FEDGE_ASSIGN_OR_RETURN(client::LocalUpdate u,
                         client::TrainLanguageModelTask(task, adapters, *device, text, 1));
  Report("after training");
  const int64_t estimate = model::EstimateLoraRoundMemoryBytes(
      config, device->lora(), device->base_format(), absl::GetFlag(FLAGS_batch),
      absl::GetFlag(FLAGS_window), true, checkpoint);
  std::printf("EstimateLoraRoundMemoryBytes: %.1f MB (batch %d x %d, %d steps, %s, loss %.4f)\n",
              static_cast<double>(estimate) / (1 << 20), absl::GetFlag(FLAGS_batch),
              absl::GetFlag(FLAGS_window), absl::GetFlag(FLAGS_steps),
              checkpoint ? "checkpointed" : "not checkpointed", u.train_loss);
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

ABSL_FLAG(bool, device_heap, true,
          "the device's heap policy (base::ReturnFreedMemory), as fedge-client sets it");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_device_heap)) fedge::base::ReturnFreedMemory();
  const absl::Status s = fedge::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "lm_device_memory: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
