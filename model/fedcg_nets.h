// FedCG's networks (Wu et al., IJCAI 2022), as the paper's code builds them for 32×32 grey
// images (yankang18/FedCG; Fashion-MNIST resized to 32×32 and normalized to [−1, 1]):
//
//   E  extractor (private)  conv 6@5×5 → avg-pool 2 → sigmoid → conv 16@5×5 → avg-pool 2 →
//                           sigmoid → flatten: a 16×5×5 feature (400 floats, NHWC order)
//   C  classifier (shared)  400 → 120 → sigmoid → 84 → sigmoid → 10 logits
//   G  generator (shared)   [z ∈ R^100 ‖ embed(y) ∈ R^10] → 256 → LeakyReLU(0.2) → 400 →
//                           sigmoid (a feature like E's)
//   D  discriminator (private) [feature ‖ embed(y)] → 256 → LeakyReLU(0.2) → 1 logit
//                           (real/fake; BCE with logits); both dense layers spectrally
//                           normalized (FedCgShape::discriminator_spectral_norm)
//
// Two architectures for G and D (FedCgShape::gan):
//   kDense (default): the networks above, dense with one hidden layer of 256, so that the
//     paper's 20 GAN epochs per round stay affordable on a 2-core CPU; D returns a logit
//     (BCE on logits: the paper's sigmoid + BCE, computed stably), and like the D some
//     versions of the paper's code use, its dense layers are spectrally normalized.
//   kConvBatchNorm: the paper's code's networks over a 1×1 → 5×5 spatial map, with DCGAN's
//     weights_init (conv weights N(0, 0.02²), batch norm γ ~ N(1, 0.02²)):
//       G  [z ‖ embed(y)] as 1×1×110 → convT 2×2 512 → BN → LeakyReLU(0.2) → convT 256 (3×3)
//          → BN → LReLU → convT 128 (4×4) → BN → LReLU → convT 16 (5×5) → sigmoid (no biases)
//       D  [feature 5×5×16 ‖ embed(y) at every position] → conv 2×2 128 (4×4) → BN → LReLU →
//          conv 256 (3×3) → BN → LReLU → conv 512 (2×2) → BN → LReLU → conv 1 (1×1) logit
//     Batch norm's running statistics are tensors of G ("G.bn1.running_mean", ...), sent,
//     averaged and distilled with it (in training forwards); G_global runs on them in the
//     clients' E+C step and as the server's teachers, as PyTorch's eval() does. It needs a
//     5 × 5 feature map (image_size 32).

// Parameter names carry the part as a prefix ("E.conv1.weight", "C.fc1.bias",
// "G.embed.weight", "D.fc2.weight"), so that what a client uploads can be checked by name.
#ifndef FEDGE_MODEL_FEDCG_NETS_H_
#define FEDGE_MODEL_FEDCG_NETS_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "model/conditional_net.h"
#include "model/sequential.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"

namespace fedge::model {

enum class FedCgGanArchitecture { kDense, kConvBatchNorm };

struct FedCgShape {
  int image_size = 32;   // square input, H = W
  int channels = 1;
  int num_classes = 10;
  int noise_dim = 100;
  int embed_dim = 10;
  // D's dense layers use spectral normalization (as the paper's code's D does): without it
  // D overpowers G after about 25 rounds of 20 GAN epochs and the global C degrades.
  bool discriminator_spectral_norm = true;  // kDense only
  FedCgGanArchitecture gan = FedCgGanArchitecture::kDense;
  int feature_size() const;  // 16 × s × s for s = ((image_size − 4) / 2 − 4) / 2
};

// The shape a FedCG job's strategy.fed_cg describes (unset fields: FedCgShape's defaults).
FedCgShape FedCgShapeFromParams(const v1::FedCgParams& params);

v1::ModelSpec FedCgExtractorSpec(const FedCgShape& shape);
v1::ModelSpec FedCgClassifierSpec(const FedCgShape& shape);
v1::ModelSpec FedCgGeneratorBodySpec(const FedCgShape& shape);
v1::ModelSpec FedCgDiscriminatorBodySpec(const FedCgShape& shape);

absl::StatusOr<std::unique_ptr<Sequential>> CreateFedCgExtractor(const FedCgShape& shape);
absl::StatusOr<std::unique_ptr<Sequential>> CreateFedCgClassifier(const FedCgShape& shape);
// Whether `shape` can have its G and D: kInvalidArgument for kConvBatchNorm with a feature map
// other than 5 × 5 (image_size 32). Job validation and the Create functions below share it.
absl::Status CheckFedCgGanShape(const FedCgShape& shape);

// Errors (kInvalidArgument): as CheckFedCgGanShape.
absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgGenerator(const FedCgShape& shape);
absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgDiscriminator(
    const FedCgShape& shape);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_FEDCG_NETS_H_
