// Model files: one binary-serialized ModelProto, written atomically (temp file + rename).
#ifndef FEDGE_MODEL_SERIALIZE_H_
#define FEDGE_MODEL_SERIALIZE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/layer.h"
#include "proto/model.pb.h"

namespace fedge::model {

inline constexpr int64_t kMaxModelFileBytes = int64_t{1} << 31;  // protobuf's 2 GiB ceiling

absl::Status SaveModel(const std::string& path, const v1::ModelProto& model);

// Reads and parses; a missing, oversized or unparsable file is an error naming the file.
// The architecture and parameters are validated by Sequential::FromProto, not here.
absl::StatusOr<v1::ModelProto> LoadModel(const std::string& path);

// Copies `proto`'s parameter values into `params`: every one of them must be present exactly
// once with the same shape and finite values, and no other name may appear. Validates
// everything before changing anything (kInvalidArgument naming the parameter); bumps each
// parameter's version.
absl::Status CopyParametersFromProto(const v1::ModelProto& proto,
                                     const std::vector<Parameter*>& params);
// CopyParametersFromProto's checks alone (shapes from Parameter::shape, so a parameter whose
// values were released is checked too); nothing is copied. Tensors for which
// `values_elsewhere` is true have their name and shape checked, not their values (an int4
// device form's blocks, which their reader checks).
absl::Status ValidateParametersProto(
    const v1::ModelProto& proto, const std::vector<Parameter*>& params,
    const std::function<bool(const v1::TensorProto&)>& values_elsewhere = {});
// Appends `params` (name, shape, values) to proto.parameters.
void AppendParametersToProto(const std::vector<Parameter*>& params, v1::ModelProto& proto);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_SERIALIZE_H_
