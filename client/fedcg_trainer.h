// FedCG's device side (Wu et al., IJCAI 2022), transport-free like local_trainer.h.
//
// A FedCgClient holds the device's PRIVATE networks across rounds: the feature extractor E
// and the discriminator D (model/fedcg_nets.h). Each round it receives the global
// classifier C and conditional generator G (tensors "C.*" and "G.*"), and runs the two
// client steps of the paper's code:
//
//   1. E and C, for `local_epochs` over the local data (Adam, lr, weight decay):
//        L = CE(C(E(x)), y) + γ_t · MSE(E(x), G_global(z, y)),   z ~ N(0, I), G frozen,
//        γ_t = 2 / (1 + e^(−10 p)) − 1,   p = min(round / gamma_ramp_rounds, 1).
//   2. The conditional GAN, for `gan_epochs` (Adam, betas (0.5, 0.999)), E frozen:
//        D: BCE(D(E(x), y), 1) + BCE(D(G(z, y), y), 0);   G: BCE(D(G(z, y), y), 1).
//
// It returns Δ = w_local − w_received for C and G only, with the example count: E and D
// never leave the device (FedCgUpdate holds nothing else, and a test checks the names).
//
// Thread safety: none; one FedCgClient per device thread.
#ifndef FEDGE_CLIENT_FEDCG_TRAINER_H_
#define FEDGE_CLIENT_FEDCG_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/local_trainer.h"
#include "data/dataset.h"
#include "model/conditional_net.h"
#include "model/fedcg_nets.h"
#include "model/optimizer.h"
#include "model/sequential.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"

namespace fedge::client {

struct FedCgClientOptions {
  int local_epochs = 20;         // step 1 (paper: 20)
  int gan_epochs = 20;           // step 2 (paper's gan_epoch: 20)
  int batch_size = 8;            // paper: 8
  float learning_rate = 3e-4f;   // E and C (the paper's setting: 3e-4)
  float weight_decay = 1e-4f;    // E and C, L2 as torch.optim.Adam
  float gan_learning_rate = 3e-4f;  // G and D (the setting's 3e-4; DCGAN's is 2e-4; betas below)
  float gan_beta1 = 0.5f;
  float gan_beta2 = 0.999f;
  int gamma_ramp_rounds = 50;    // p = min(round / gamma_ramp_rounds, 1)
};

// γ_t = 2 / (1 + e^(−10 p)) − 1 with p = min(round / ramp_rounds, 1): 0 at round 0,
// ≈ 1 from about a third of the ramp on.
float FedCgGamma(int round, int ramp_rounds);

struct FedCgUpdate {
  v1::ModelProto delta;        // "C.*" and "G.*" only: w_local − w_received
  int64_t num_examples = 0;    // the FedAvg weight
  double classifier_loss = 0;  // step 1, mean CE over the last epoch
  double distance_loss = 0;    // step 1, mean MSE to G_global over the last epoch
  double train_accuracy = 0;   // step 1, last epoch
  double d_loss = 0;           // step 2, last epoch means
  double g_loss = 0;
  double gamma = 0;
  int64_t steps = 0;           // optimizer steps, both phases
  double seconds = 0;
};

class FedCgClient {
 public:
  // E and D initialized from `seed` (PyTorch's default initialization).
  static absl::StatusOr<std::unique_ptr<FedCgClient>> Create(const model::FedCgShape& shape,
                                                             const FedCgClientOptions& options,
                                                             uint64_t seed);

  // One round. `global` must hold exactly the C.* and G.* parameters (finite, right
  // shapes); `data` examples are shape.channels × image_size² floats (a 1-channel image is
  // the same in NCHW and NHWC) with labels in [0, num_classes). Local shuffling and noise
  // come from (seed, round).
  // Errors: kInvalidArgument for a bad `global` or data that does not fit.
  // `cancelled` (may be empty) is asked before every batch: when it says true, TrainRound
  // returns kCancelled (E, D and the optimizers keep what the finished batches did).
  absl::StatusOr<FedCgUpdate> TrainRound(const v1::ModelProto& global,
                                         const data::Dataset& data, int round,
                                         const std::function<bool()>& cancelled = nullptr);

  // Accuracy of the client's model as the paper evaluates it: the private E with the
  // classifier in `global` (C.* tensors; other tensors are ignored) on `data`.
  absl::StatusOr<double> Evaluate(const v1::ModelProto& global, const data::Dataset& data);

  // The private networks (for tests and the simulator; never serialized by this class).
  model::Sequential& extractor() { return *extractor_; }
  model::ConditionalNet& discriminator() { return *discriminator_; }

 private:
  FedCgClient() = default;
  absl::Status CheckData(const data::Dataset& data) const;

  model::FedCgShape shape_;
  FedCgClientOptions options_;
  uint64_t seed_ = 0;
  std::unique_ptr<model::Sequential> extractor_;        // private
  std::unique_ptr<model::ConditionalNet> discriminator_;  // private
  std::unique_ptr<model::Sequential> classifier_;       // shared, set from each round's global
  std::unique_ptr<model::ConditionalNet> generator_;    // shared, set from each round's global
  std::unique_ptr<model::Adam> opt_ec_, opt_d_, opt_g_;
};

// Copies the values of `proto`'s tensors into `params` by name. With `exact`, every
// tensor of `proto` must match one parameter (no extras); every parameter must be present
// once with its shape and finite values. Errors: kInvalidArgument naming the tensor.
absl::Status SetParametersByName(const std::vector<model::Parameter*>& params,
                                 const v1::ModelProto& proto, bool exact);

// The C.* and G.* parameters as a ModelProto (no spec), in network order.
v1::ModelProto SharedParametersProto(model::Sequential& classifier,
                                     model::ConditionalNet& generator);

// ---- what a FedCG job's task means on a device (proto/job.proto, FedCgParams; the
// networks' shape is model::FedCgShapeFromParams) ----

// The client options of a FedCG task: E+C from task.training (epochs, batch_size,
// learning_rate, weight_decay), the GAN step and γ ramp from task.fed_cg.
FedCgClientOptions FedCgOptionsFromTask(const v1::TaskHeader& task);

// The shared C.* and G.* tensors of `shape` (names and shapes; values PyTorch-initialized
// from seed 0): what a FedCG task's payload decodes into.
absl::StatusOr<v1::ModelProto> FedCgSharedModel(const model::FedCgShape& shape);

// The shared C.* and G.* tensors a FedCG task's payload decodes into, after checking what a
// device must not take from the network on trust: the shape's bounds (image_size [16, 256],
// channels [1, 4], num_classes [2, 1000], noise_dim and embed_dim [1, 4096]), a known
// gan_architecture (an unknown one: a newer coordinator), no teacher, and a shape the
// networks accept (CheckFedCgGanShape). Errors: kInvalidArgument saying which.
absl::StatusOr<v1::ModelProto> FedCgTaskSharedModel(const v1::TaskHeader& task);

// Memory (bytes) one FedCG round holds at its peak on a device at `batch_size`, as
// FedCgClient and the runtime lay it out (the counterpart of model::EstimateDeviceRoundMemoryBytes
// for FedCG tasks; client/memory_budget.h):
//   parameters  every tensor of E, C, G and D with its gradient (8 bytes a float), Adam's two
//               moments for the trained ones (8 more; batch norm's running statistics have none),
//               and the shared C and G four more times (the task's global copy, the copy Δ is
//               taken against, Δ, its encoded upload);
//   activations one batch of each network (input, every layer's output, the two ping-pong
//               gradient buffers, a conditional net's concatenated input and its gradient);
//   scratch     Conv2d's im2col chunk, its gradient and output chunk and dW (the bound of
//               model::EstimateTrainingMemoryBytes), a transposed convolution's column buffer
//               for the whole batch, batch norm's normalized copy.
// Not counted: the device's data (the caller adds FedCgInputs' copy), allocator overhead,
// the process. It builds the four networks to measure them (their parameters, briefly).
// Errors: kInvalidArgument for batch_size < 1 or a shape the networks refuse
// (model::CheckFedCgGanShape).
absl::StatusOr<int64_t> EstimateFedCgRoundMemoryBytes(const model::FedCgShape& shape,
                                                      int batch_size);

// A device's raw examples (images [channels, rows, cols], pixels in [0, 1], as shards hold
// them; flat square grey images [side²] are taken as [1, side, side]) as FedCG's networks
// take them: resized to image_size × image_size
// (data::ResizeImages, bilinear), scaled to [−1, 1], channels last. Errors:
// kInvalidArgument when the examples are not images with shape.channels channels.
absl::StatusOr<data::Dataset> FedCgInputs(const data::Dataset& raw,
                                          const model::FedCgShape& shape);

// A device's examples split into what it trains on and what it holds out for evaluation:
// the last min(n − 1, ceil(fraction · n)) examples of an order shuffled with `seed` (none for
// fraction ≤ 0 or n < 2), each part in the original order.
struct FedCgDeviceData {
  data::Dataset train;
  data::Dataset eval;  // empty (num_examples 0) when nothing is held out
};
FedCgDeviceData FedCgHoldOut(data::Dataset inputs, double fraction, uint64_t seed);

// One FedCG task on a device (the gRPC runtime and fedge-sim's virtual clients): first the
// paper's evaluation, `client`'s private E with `global`'s C on data.eval (when it holds
// examples; LocalUpdate.eval_accuracy / eval_examples), then TrainRound on data.train with
// round index `round` (the task's round − 1). The update is Δ of C.* and G.* with the
// example count, the last epoch's classifier loss and accuracy, steps, seconds and Δ's norm.
absl::StatusOr<LocalUpdate> FedCgDeviceRound(FedCgClient& client, const v1::ModelProto& global,
                                             const FedCgDeviceData& data, int round,
                                             const std::function<bool()>& cancelled = nullptr);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_FEDCG_TRAINER_H_
