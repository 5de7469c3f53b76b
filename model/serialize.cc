#include "model/serialize.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

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
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) {
    return absl::DataLossError(absl::StrCat("LoadModel: reading ", path, " failed"));
  }
  v1::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    return absl::DataLossError(
        absl::StrCat("LoadModel: ", path, " is not a valid model file (protobuf parse failed)"));
  }
  if (model.spec().layers_size() == 0) {
    return absl::DataLossError(absl::StrCat("LoadModel: ", path, " holds no layers"));
  }
  return model;
}

}  // namespace fedge::model
