// Conversions between the model as stored and shipped (v1::ModelProto) and as aggregated
// (aggregation::ModelWeights / Update).
#ifndef FEDGE_SERVER_MODEL_WEIGHTS_H_
#define FEDGE_SERVER_MODEL_WEIGHTS_H_

#include <string>

#include "absl/status/status.h"
#include "aggregation/update.h"
#include "proto/model.pb.h"

namespace fedge::server {

// The parameters of `model`, in order.
aggregation::ModelWeights WeightsFromProto(const v1::ModelProto& model);

// `spec` with `weights` as its parameters.
v1::ModelProto ProtoFromWeights(const v1::ModelSpec& spec,
                                const aggregation::ModelWeights& weights);

// A client's delta (a ModelProto of Δ tensors, as client::TrainLocally returns it) as an
// aggregation update of weight `num_examples`. Shapes and values are checked by the
// aggregator, not here.
aggregation::Update UpdateFromDeltaProto(const std::string& client_id, double num_examples,
                                         const v1::ModelProto& delta);

// OK when every value of `weights` is finite; otherwise INTERNAL naming the first tensor
// with a NaN or an infinity (a model that must not be committed or sent out).
absl::Status CheckFinite(const aggregation::ModelWeights& weights);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_MODEL_WEIGHTS_H_
