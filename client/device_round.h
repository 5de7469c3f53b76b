// The device's round, transport-free: what a device does with a task from the moment its
// header arrives to the moment its update is ready to leave. The gRPC runtime
// (client/grpc/client_runtime.h) and the simulator (sim/simulator.h) both run these steps,
// so a simulated device computes, seeds and encodes exactly what a fleet device sends.
//
//   FEDGE_ASSIGN_OR_RETURN(DeviceTask task, AdmitTask(header, resources));  // before download
//   FEDGE_RETURN_IF_ERROR(DecodeTaskPayload(payload, task));                // as it was sent
//   const RoundSeeds seeds = DeviceRoundSeeds(task.header, client_id);
//   FEDGE_ASSIGN_OR_RETURN(LocalUpdate u, TrainTask(task.header, task.model, teacher, local_data,
//                                                   seeds.shuffle, cancelled));
//   FEDGE_ASSIGN_OR_RETURN(int64_t bytes_up, SendUpdate(task.header, u, client_id, {}, link));
//   // over the device's link (device_link.h): encoded and uploaded, or through the round's
//   // secure-aggregation session (secagg_device.h)
//
// Steps:
//   - AdmitTask: the task's model (and teacher) as the payload must fill them, the payload's
//     exact size, and the memory-budget check (memory_budget.h), all from the header alone,
//     so that a task the device cannot take is never downloaded. A task over the budget is
//     RESOURCE_EXHAUSTED: the device declines it with that message (UpdateHeader.refusal).
//   - DecodeTaskPayload: the model's section, then the teacher's, in the encodings their
//     manifests name (float32, int8 per channel, int4 blocks: what the coordinator quantized
//     is what the device trains from).
//   - DeviceRoundSeeds: the round's shuffling seed and the stochastic-rounding seed of the
//     update's encoding, from (training.shuffle_seed, client id, round). The only place they
//     are derived: a fleet whose devices carry the simulator's ids trains on the same batches.
//   - EncodeUpdate: Δ in the task's update encoding, and the header every transport sends:
//     ids, manifest, byte count, example count and the metrics the coordinator records
//     (loss, accuracy, steps, seconds, Δ's norm before clipping for adaptive clipping, FedCG's
//     evaluation). The transport adds the session token and, on a device, its peak RSS.
//   - SendUpdate: the update leaves the device: EncodeUpdate and DeviceLink::Upload, or, in a
//     secure-aggregation round, the four-phase protocol (SecAggDevice, RunSecureAggregation).
//
// Thread safety: the functions are pure (no shared state); callers may run several devices'
// rounds at once.
#ifndef FEDGE_CLIENT_DEVICE_ROUND_H_
#define FEDGE_CLIENT_DEVICE_ROUND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/device_link.h"
#include "client/local_trainer.h"
#include "data/dataset.h"
#include "data/token_windows.h"
#include "model/transformer.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"

namespace fedge::client {

// A task as the device holds it: the header, the model to train and the teacher.
struct DeviceTask {
  v1::TaskHeader header;
  v1::ModelProto model;                   // the task's parameters (after DecodeTaskPayload)
  std::optional<v1::ModelProto> teacher;  // the distillation teacher, when the task has one
  int64_t model_bytes = 0;    // payload bytes of the model's section; the teacher's follow
  int64_t payload_bytes = 0;  // the whole payload: what header.total_bytes must announce
  // A language-model task that fits the device's budget only with activation
  // checkpointing (TransformerLM::SetActivationCheckpointing: the same results, one more
  // forward pass of the blocks a step); the device trains with it.
  bool checkpoint_activations = false;
};

// What a task's admission needs to know of the device.
struct DeviceResources {
  int64_t memory_budget_bytes = 0;  // DeviceProfile.memory_budget_bytes; 0 = no budget
  int64_t num_examples = 0;         // local training examples (a text device: its tokens)
  int64_t example_floats = 0;       // floats per example (the preprocessed copy's size)
  int64_t eval_examples = 0;        // FedCG: a separate evaluation set's examples
  // A text device: the SHA-256 (hex) of its base model file; empty = not checked (the
  // simulator's devices read the coordinator's own file).
  std::string language_model_base_sha256;
};

// The task's models (values zero until decoded) and payload sizes, checked against the
// header before a payload byte is read. INVALID_ARGUMENT for a task this device cannot take
// (a spec that does not build, a manifest that does not match it, an encoding a task may
// not use, a wrong total_bytes); RESOURCE_EXHAUSTED when it does not fit the budget (a
// language model: not even with activation checkpointing, which is chosen when it fits only
// with it);
// FAILED_PRECONDITION for a language-model task whose base (its SHA-256) is not the
// device's. The last two are declined with the reason (UpdateHeader.refusal).
absl::StatusOr<DeviceTask> AdmitTask(const v1::TaskHeader& header, const DeviceResources& device);

// Fills task.model (and task.teacher) from the task's payload. REQUIRES: `task` from
// AdmitTask. INVALID_ARGUMENT for a payload of the wrong size or undecodable values.
absl::Status DecodeTaskPayload(absl::string_view payload, DeviceTask& task);

// The seeds of one device's round (see the header comment).
struct RoundSeeds {
  uint64_t shuffle = 0;          // LocalTrainingOptions.seed
  uint64_t update_encoding = 0;  // stochastic rounding of Δ (INT8_STOCHASTIC_CHUNKED)
};
RoundSeeds DeviceRoundSeeds(const v1::TaskHeader& task, absl::string_view client_id);
// FedCG: the seed of the device's FedCgClient and of its held-out split, the same in every
// round of a job, so that its private E and D stay its own.
uint64_t FedCgDeviceSeed(const v1::TaskHeader& task, absl::string_view client_id);

// Trains a (non-FedCG) task's `model` on `data` (already in the task's preprocessing) with
// client::TrainLocally, `teacher` (may be null) distilling. `cancelled` may be empty.
// Errors: TrainLocally's (CANCELLED when `cancelled` returned true).
absl::StatusOr<LocalUpdate> TrainTask(const v1::TaskHeader& task, const v1::ModelProto& model,
                                      const v1::ModelProto* teacher, const data::Dataset& data,
                                      uint64_t shuffle_seed,
                                      std::function<bool()> cancelled = nullptr);

// A language-model task (header.language_model): its adapters (task.model, decoded) trained
// on `device_model`, the device's copy of the task's base (model_spec.transformer) with the
// task's LoRA adapters and base format (the device keeps it across rounds and tasks), on
// windows of the device's text (`text`, in the task's window). Client::TrainLanguageModelLocally with
// the task's options. FAILED_PRECONDITION when the model or the windows are not the task's;
// otherwise TrainLanguageModelLocally's errors.
absl::StatusOr<LocalUpdate> TrainLanguageModelTask(const v1::TaskHeader& task,
                                                   const v1::ModelProto& adapters,
                                                   model::TransformerLM& device_model,
                                                   const data::TokenWindows& text,
                                                   uint64_t shuffle_seed,
                                                   std::function<bool()> cancelled = nullptr);
// The device's copy of a language-model task's base: the task's architecture with its LoRA
// adapters (zero until TrainLanguageModelTask sets the task's), the base's values from
// `load_base` (a language-model file, model/language_model.h), in the task's base format
// (int4: the fp32 weights released). A full-parameter task's model is the architecture
// alone (every value comes with each task): `load_base` is not called. Built in the order
// that keeps the peak low: the model and adapters (the frozen base's gradients released; an
// int4 base's fp32 projections too), then the file, whose tensors an int4 base takes one by
// one (TransformerLM::LoadInt4Base), each freed once quantized. FAILED_PRECONDITION when the
// file is not the task's
// architecture; INVALID_ARGUMENT for a task whose LoRA spec or window is out of range and
// for a file whose values do not fit; `load_base`'s errors.
absl::StatusOr<std::unique_ptr<model::TransformerLM>> LanguageModelForTask(
    const v1::TaskHeader& task, const std::function<absl::StatusOr<v1::ModelProto>()>& load_base);
// The base format a language-model task names.
model::BaseFormat LanguageModelBaseFormat(const v1::TaskHeader& task);

// An update ready to send: its header (without the session token) and payload.
struct EncodedUpdate {
  v1::UpdateHeader header;
  std::string payload;
};
// Δ in task.update_encoding (FLOAT32 when unset), stochastic rounding seeded by
// `encoding_seed`, with the header described above. INVALID_ARGUMENT when Δ cannot be
// encoded (model/payload.h).
absl::StatusOr<EncodedUpdate> EncodeUpdate(const v1::TaskHeader& task, const LocalUpdate& update,
                                           absl::string_view client_id, uint64_t encoding_seed);

// How the update leaves the device (SendUpdate).
struct SendOptions {
  // Reproducible simulations and tests only: seeds the distributed-DP noise share of a
  // secure-aggregation round (DeviceNoiseSeed(*noise_seed, task, client id)) instead of the
  // CSPRNG. Noise others can predict gives no privacy.
  std::optional<uint64_t> noise_seed;
  int64_t peak_rss_bytes = 0;  // reported with the update
};
// Sends `update`, the device's answer to `task`, over `link`: in a secure-aggregation round
// (task.secure_aggregation) through the protocol (RunSecureAggregation), else encoded
// (EncodeUpdate, stochastic rounding seeded from DeviceRoundSeeds) and uploaded. Returns the
// bytes sent. Errors: EncodeUpdate's, SecAggDevice's and the link's.
absl::StatusOr<int64_t> SendUpdate(const v1::TaskHeader& task, const LocalUpdate& update,
                                   absl::string_view client_id, const SendOptions& options,
                                   DeviceLink& link);

// The header of a device's refusal of its task (UpdateHeader.refusal: `reason`, cut to the
// 256 bytes the coordinator keeps), without the session token.
v1::UpdateHeader DeclineHeader(const v1::TaskHeader& task, absl::string_view client_id,
                               absl::string_view reason);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_DEVICE_ROUND_H_
