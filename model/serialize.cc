#include "model/serialize.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace fedge::model {

absl::Status SaveModel(const std::string& path, const v1::ModelProto& model) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::UnavailableError(
          absl::StrCat("SaveModel: cannot write ", tmp, ": ", std::strerror(errno)));
    }
    if (!model.SerializeToOstream(&out) || !out.flush()) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat("SaveModel: writing ", tmp, " failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("SaveModel: rename to ", path, ": ", err));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelProto> LoadModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("LoadModel: cannot open ", path, ": ", std::strerror(errno)));
  }
  const std::streamoff size = in.tellg();
  if (size < 0 || size >= kMaxModelFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadModel: ", path, " is ", size, " bytes, over the 2 GiB limit"));
  }
  // Parsed from the stream, not from a copy of the file: a device loading its base holds
  // the parsed values once, not twice.
  in.seekg(0);
  v1::ModelProto model;
  if (!model.ParseFromIstream(&in)) {
    if (in.bad()) {
      return absl::DataLossError(absl::StrCat("LoadModel: reading ", path, " failed"));
    }
    return absl::DataLossError(
        absl::StrCat("LoadModel: ", path, " is not a valid model file (protobuf parse failed)"));
  }
  if (model.spec().layers_size() == 0 && !model.spec().has_transformer()) {
    return absl::DataLossError(
        absl::StrCat("LoadModel: ", path, " holds no layers and no language model"));
  }
  return model;
}

absl::Status CopyParametersFromProto(const v1::ModelProto& proto,
                                     const std::vector<Parameter*>& params) {
  // Validate everything before changing anything.
  FEDGE_RETURN_IF_ERROR(ValidateParametersProto(proto, params));
  absl::flat_hash_map<std::string, const v1::TensorProto*> by_name;
  for (const v1::TensorProto& t : proto.parameters()) by_name.emplace(t.name(), &t);
  for (Parameter* p : params) {
    const v1::TensorProto& t = *by_name[p->name];
    std::copy(t.values().begin(), t.values().end(), p->value.begin());
    ++p->version;
  }
  return absl::OkStatus();
}

absl::Status ValidateParametersProto(
    const v1::ModelProto& proto, const std::vector<Parameter*>& params,
    const std::function<bool(const v1::TensorProto&)>& values_elsewhere) {
  absl::flat_hash_map<std::string, const v1::TensorProto*> by_name;
  for (const v1::TensorProto& t : proto.parameters()) {
    if (!by_name.emplace(t.name(), &t).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("Model: parameter '", t.name(), "' appears twice"));
    }
  }
  for (Parameter* p : params) {
    auto it = by_name.find(p->name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat("Model: parameter '", p->name, "' missing"));
    }
    const v1::TensorProto& t = *it->second;
    std::vector<int> shape(t.shape().begin(), t.shape().end());
    if (t.shape_size() != static_cast<int>(p->shape.size()) ||
        !std::equal(p->shape.begin(), p->shape.end(), t.shape().begin())) {
      return absl::InvalidArgumentError(absl::StrCat("Model: parameter '", p->name, "' has shape ",
                                                     absl::StrCat("[", absl::StrJoin(shape, ", "), "]"), ", expected ",
                                                     absl::StrCat("[", absl::StrJoin(p->shape, ", "), "]")));
    }
    if (values_elsewhere && values_elsewhere(t)) continue;
    int64_t expected = 1;
    for (int d : p->shape) expected *= d;
    if (t.values_size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat("Model: parameter '", p->name, "' has ",
                                                     t.values_size(), " values, expected ",
                                                     expected));
    }
    for (float v : t.values()) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("Model: parameter '", p->name, "' has a non-finite value"));
      }
    }
  }
  if (by_name.size() != params.size()) {
    for (const auto& entry : by_name) {
      const std::string& name = entry.first;
      if (std::none_of(params.begin(), params.end(),
                       [&](const Parameter* p) { return p->name == name; })) {
        return absl::InvalidArgumentError(
            absl::StrCat("Model: unknown parameter '", name, "'"));
      }
    }
  }
  return absl::OkStatus();
}

void AppendParametersToProto(const std::vector<Parameter*>& params, v1::ModelProto& proto) {
  for (const Parameter* p : params) {
    v1::TensorProto* t = proto.add_parameters();
    t->set_name(p->name);
    for (int d : p->shape) t->add_shape(d);
    t->mutable_values()->Assign(p->value.begin(), p->value.end());
  }
}

}  // namespace fedge::model
