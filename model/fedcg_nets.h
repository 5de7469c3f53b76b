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
// Deviation from the paper's code, on purpose: its G and D are small transposed/plain
// convolution stacks with batch norm over a 1×1 → 5×5 spatial map; fedge has neither
// transposed convolution nor batch norm, so G and D are dense networks of similar width
// with the same inputs and outputs (and D returns a logit instead of a sigmoid, with the
// BCE applied on logits: the same loss, computed stably). They have one hidden layer of
// 256 so that the paper's 20 GAN epochs per round stay affordable on a 2-core CPU (the
// GAN step dominated a round with two hidden layers of 512/256). Like the paper's D (whose
// convolutions are spectrally normalized), fedge's D normalizes its dense layers.
//
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

struct FedCgShape {
  int image_size = 32;   // square input, H = W
  int channels = 1;
  int num_classes = 10;
  int noise_dim = 100;
  int embed_dim = 10;
  // D's dense layers use spectral normalization (as the paper's code's D does): without it
  // D overpowers G after about 25 rounds of 20 GAN epochs and the global C degrades.
  bool discriminator_spectral_norm = true;
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
absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgGenerator(const FedCgShape& shape);
absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgDiscriminator(
    const FedCgShape& shape);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_FEDCG_NETS_H_
