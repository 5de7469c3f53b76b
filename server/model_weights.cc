#include "server/model_weights.h"

#include "absl/strings/str_cat.h"

#include <cmath>

namespace fedge::server {
namespace {

aggregation::Tensor TensorFromProto(const v1::TensorProto& t) {
  aggregation::Tensor out;
  out.name = t.name();
  out.shape.assign(t.shape().begin(), t.shape().end());
  out.values.assign(t.values().begin(), t.values().end());
  return out;
}

}  // namespace

aggregation::ModelWeights WeightsFromProto(const v1::ModelProto& model) {
  aggregation::ModelWeights weights;
  weights.reserve(model.parameters_size());
  for (const v1::TensorProto& t : model.parameters()) weights.push_back(TensorFromProto(t));
  return weights;
}

v1::ModelProto ProtoFromWeights(const v1::ModelSpec& spec,
                                const aggregation::ModelWeights& weights) {
  v1::ModelProto proto;
  *proto.mutable_spec() = spec;
  for (const aggregation::Tensor& w : weights) {
    v1::TensorProto* t = proto.add_parameters();
    t->set_name(w.name);
    for (int64_t d : w.shape) t->add_shape(d);
    t->mutable_values()->Assign(w.values.begin(), w.values.end());
  }
  return proto;
}

aggregation::Update UpdateFromDeltaProto(const std::string& client_id, double num_examples,
                                         const v1::ModelProto& delta) {
  aggregation::Update update;
  update.client_id = client_id;
  update.weight = num_examples;
  update.tensors.reserve(delta.parameters_size());
  for (const v1::TensorProto& t : delta.parameters()) update.tensors.push_back(TensorFromProto(t));
  return update;
}

absl::Status CheckFinite(const aggregation::ModelWeights& weights) {
  for (const aggregation::Tensor& t : weights) {
    for (float v : t.values) {
      if (!std::isfinite(v)) {
        return absl::InternalError(
            absl::StrCat("Coordinator: the new model has a non-finite value in ", t.name));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace fedge::server
