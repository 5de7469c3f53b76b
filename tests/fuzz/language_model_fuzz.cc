// A language-model base from outside, as a device takes it: the bytes a coordinator serves
// with FetchBaseModel (the job's file or its int4 device form), built into the device's
// model for a task over that base (client::LanguageModelForTask: adapters, the int4 blocks
// or values), the file's tokenizer parsed as a device parses it, and one training step on
// a window of tokens. Input: [1 byte: bit 0: int4 (else fp32) base; bit 1: the base's int4
// device form made from the bytes first (model::Int4DeviceForm); bits 2-3: LoRA rank 1-4]
// [a ModelProto]. Invariant: a base that loads trains a step (no crash, no allocation the
// configuration's bounds do not allow, a finite or clearly non-finite loss, never UB).
#include <cmath>
#include <cstdint>
#include <vector>

#include "client/device_round.h"
#include "data/bpe.h"
#include "model/transformer.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  fedge::v1::ModelProto proto;
  if (!proto.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (!proto.tokenizer().empty()) fedge::data::BpeTokenizer::Parse(proto.tokenizer()).IgnoreError();
  if (!proto.spec().has_transformer()) return 0;
  const fedge::model::TransformerConfig config =
      fedge::model::TransformerConfigFromSpec(proto.spec().transformer());
  if (!fedge::model::ValidateTransformerConfig(config).ok()) return 0;
  // Small models only: a step of a large one is slow, not wrong.
  if (fedge::model::TransformerParameterCount(config) > (1 << 18) || config.context > 64) return 0;
  if (flags & 2) {
    auto form = fedge::model::Int4DeviceForm(proto);
    if (!form.ok()) return 0;
    proto = std::move(form).value();
  }
  fedge::v1::TaskHeader task;
  *task.mutable_model_spec()->mutable_transformer() = proto.spec().transformer();
  fedge::v1::LoraSpec& lora = *task.mutable_language_model()->mutable_lora();
  lora.set_rank(1 + ((flags >> 2) & 3));
  lora.set_alpha(2.0f);
  lora.set_attention(true);
  lora.set_mlp(true);
  lora.set_output(true);
  lora.set_base_format((flags & 1) ? fedge::v1::LoraSpec::BASE_FORMAT_INT4
                                   : fedge::v1::LoraSpec::BASE_FORMAT_FP32);
  const int window = config.context < 4 ? config.context : 4;
  task.mutable_language_model()->set_window(window);
  auto model = fedge::client::LanguageModelForTask(
      task, [&]() -> absl::StatusOr<fedge::v1::ModelProto> { return proto; });
  if (!model.ok()) return 0;
  std::vector<int32_t> tokens(window);
  for (int i = 0; i < window; ++i) tokens[i] = i % config.vocab_size;
  (*model)->ZeroGrad();
  const float loss = (*model)->Loss(tokens.data(), tokens.data(), 1, window, true);
  FEDGE_FUZZ_ASSERT(!(loss < 0.0f));  // a cross-entropy is never negative (NaN aside)
  return 0;
}
