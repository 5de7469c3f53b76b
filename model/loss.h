// Losses over a batch, each returning the mean loss and (when `grad` is not null) writing
// dL/dinput, already divided by the batch size.
#ifndef FEDGE_MODEL_LOSS_H_
#define FEDGE_MODEL_LOSS_H_

#include <cstdint>

namespace fedge::model {

// Mean over the batch of −log softmax(logits)[label]. Labels in [0, classes).
float SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int batch, int classes,
                          float* grad);

// Knowledge distillation (Hinton et al. 2015), mean over the batch of
//   (1 − λ)·CE(y, s) + λ·T²·KL(softmax(t/T) ‖ softmax(s/T))
// for student logits s and teacher logits t. The T² keeps the soft term's gradient scale
// independent of T: d/ds of the soft term is λ·T·(softmax(s/T) − softmax(t/T)).
float DistillationLoss(const float* student, const float* teacher, const int32_t* labels,
                       int batch, int classes, float lambda, float temperature, float* grad);

// Mean over all n elements of (pred − target)².
float MeanSquaredError(const float* pred, const float* target, int64_t n, float* grad);

// Binary cross-entropy on logits, mean over all n elements of
//   −[t·log σ(x) + (1 − t)·log(1 − σ(x))]
// for targets t in [0, 1], computed stably as max(x, 0) − x·t + log(1 + e^−|x|)
// (PyTorch's BCEWithLogitsLoss). The gradient is (σ(x) − t) / n.
float BinaryCrossEntropyWithLogits(const float* logits, const float* targets, int64_t n,
                                   float* grad);

// Number of rows whose arg-max equals the label.
int CountCorrect(const float* logits, const int32_t* labels, int batch, int classes);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LOSS_H_
