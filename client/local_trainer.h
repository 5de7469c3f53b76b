// The device-side training step of a round, transport-free: take the model the coordinator
// sent, fine-tune it on local data, and return the update Δ = w_local − w_received with the
// example count it is weighted by. The gRPC runtime (client/grpc/) and the simulator call it
// the same way.
#ifndef FEDGE_CLIENT_LOCAL_TRAINER_H_
#define FEDGE_CLIENT_LOCAL_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/token_windows.h"
#include "model/layer.h"
#include "model/optimizer.h"
#include "model/transformer.h"
#include "proto/coordinator.pb.h"
#include "proto/model.pb.h"

namespace fedge::client {

struct LocalTrainingOptions {
  int epochs = 1;
  int batch_size = 64;
  enum class Optimizer { kSgd, kAdam } optimizer = Optimizer::kSgd;
  float learning_rate = 0.01f;
  float momentum = 0.9f;        // SGD only (heavy-ball, as torch.optim.SGD)
  bool nesterov = false;        // SGD only, needs momentum > 0
  float weight_decay = 0.0f;
  float adam_beta1 = 0.9f;      // Adam only (the job's local_training.adam_*)
  float adam_beta2 = 0.999f;
  float adam_epsilon = 1e-8f;
  int64_t max_steps = 0;        // stop after this many optimizer steps (0: epochs decide)
  // FedProx (Li et al. 2020): adds μ/2 · ‖w − w_received‖² to the local loss.
  float proximal_mu = 0.0f;
  // DP-FedAvg (McMahan et al. 2018): Δ is scaled to L2 norm ≤ clip_norm before it leaves
  // the device (0 = no clipping). LocalUpdate::delta_norm reports the norm before clipping.
  double clip_norm = 0.0;
  model::ComputeMode mode = model::ComputeMode::kFp32;  // fp32 or int8 (QAT)
  uint64_t seed = 0;            // shuffling; vary it per client and round
  // Knowledge distillation (Hinton et al. 2015; docs/architecture.md, Algorithms): when
  // `teacher` is set and kd_weight > 0 the loss is
  // (1 − λ)·CE + λ·T²·KL(softmax(t/T) ‖ softmax(s/T)) (model::DistillationLoss) with
  // λ = kd_weight ∈ [0, 1], T = kd_temperature > 0, and t the logits of `teacher` run for
  // inference (training = false) in teacher_mode (fp32, int8 or int4) on the same batch. The
  // teacher (e.g. the central model or a larger tier) must take the same input and give the
  // same number of outputs as the trained model. Borrowed: must outlive TrainLocally. Unused
  // when kd_weight is 0.
  const v1::ModelProto* teacher = nullptr;
  model::ComputeMode teacher_mode = model::ComputeMode::kInt8;
  float kd_weight = 0.0f;
  float kd_temperature = 2.0f;
  // Polled before every optimizer step; when it returns true, TrainLocally stops and
  // returns CANCELLED (a device shutting down or a task past its deadline). May be empty.
  std::function<bool()> cancelled;
  // When set, TrainLocally steps with this optimizer instead of a fresh one made from the
  // fields above, so that its state (Adam's moments and step count, SGD's momentum) carries
  // over from call to call, as in a PyTorch client that creates its optimizer once and
  // loads each round's global weights into the same tensors. Its hyperparameters are its
  // own (MakeLocalOptimizer builds one from these options). Borrowed; every call must train
  // the same architecture (the state is matched to the parameters by position).
  model::Optimizer* persistent_optimizer = nullptr;
};

struct LocalUpdate {
  v1::ModelProto delta;         // same tensors as the received model: w_local − w_received
  int64_t num_examples = 0;     // the FedAvg weight
  double train_loss = 0;        // mean over the last epoch (the distillation loss when distilling)
  double train_accuracy = 0;
  int64_t steps = 0;
  double seconds = 0;
  double delta_norm = 0;        // L2 norm of Δ over all tensors, before any clipping
  // FedCG (set by the FedCG device paths, never by TrainLocally): the device's private E
  // with the task's global C on its held-out examples, before training; 0 examples = none.
  double eval_accuracy = 0;
  int64_t eval_examples = 0;
};

// The options a task asks for (training config, FedProx μ, distillation λ, T and the
// teacher's compute mode; the teacher's weights are the caller's to set in `teacher`), with
// the client's shuffling `seed`. INVALID_ARGUMENT for a compute mode the client cannot
// train in (int4), λ outside [0, 1] or T not finite and > 0.
absl::StatusOr<LocalTrainingOptions> OptionsFromTask(const v1::TaskHeader& task, uint64_t seed);

// The optimizer `options` describe (SGD or Adam with their learning rate, momentum and
// weight decay), for LocalTrainingOptions::persistent_optimizer.
absl::StatusOr<std::unique_ptr<model::Optimizer>> MakeLocalOptimizer(
    const LocalTrainingOptions& options);

// Trains a copy of `received` on `data` (all of it, shuffled per epoch).
// Errors: an invalid model (architecture or parameters), data that does not fit the model
// (feature size or classes), empty data, bad options, an invalid teacher or one whose input
// or output size differs from the model's; CANCELLED when options.cancelled said so.
absl::StatusOr<LocalUpdate> TrainLocally(const v1::ModelProto& received,
                                         const data::Dataset& data,
                                         const LocalTrainingOptions& options);

// A language-model task's local training: sets `received` (what a task sends) on `model`
// and trains it on windows of the device's text. With adapters (the device's base with LoRA
// adapters and its base format, model/transformer.h), `received` is the adapters and only
// they train; without (full-parameter fine-tuning, an fp32 model), `received` is every
// parameter and all of them train. Returns Δ = trained − received (as AdaptersToProto, or
// ToProto without adapters), clipped as options say. An epoch is ⌈windows / batch⌉ steps of
// `batch_size` windows at random starts (Rng(options.seed)); the FedAvg weight is the number
// of tokens the non-overlapping windows predict (windows × len), the unit a text device
// registers its examples in. Adam or SGD, FedProx's μ, max_steps and cancellation as for
// TrainLocally. The trained tensors hold Δ afterwards (the next task sets them again).
// Errors: INVALID_ARGUMENT for bad options, a compute mode other than fp32, distillation,
// windows longer than the context or received tensors that do not match the model's;
// FAILED_PRECONDITION for text shorter than one window; CANCELLED.
absl::StatusOr<LocalUpdate> TrainLanguageModelLocally(model::TransformerLM& model,
                                             const v1::ModelProto& received,
                                             const data::TokenWindows& windows,
                                             const LocalTrainingOptions& options);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_LOCAL_TRAINER_H_
