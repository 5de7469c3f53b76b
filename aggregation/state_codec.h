// Byte writer and bounded reader for the little-endian binary state that aggregators and
// strategies serialize for checkpoints (internal to aggregation/).
#ifndef FEDGE_AGGREGATION_STATE_CODEC_H_
#define FEDGE_AGGREGATION_STATE_CODEC_H_

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fedge::aggregation::internal {

class StateWriter {
 public:
  template <typename T>
  void Put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void PutBytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  // Appends the CRC-32 (zlib) of everything written so far and returns the bytes.
  std::string Finish() {
    const uint32_t crc = static_cast<uint32_t>(
        crc32_z(0, reinterpret_cast<const Bytef*>(out_.data()), out_.size()));
    Put(crc);
    return std::move(out_);
  }

 private:
  std::string out_;
};

class StateReader {
 public:
  explicit StateReader(absl::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    return GetBytes(v, sizeof(T));
  }
  bool GetBytes(void* p, size_t n) {
    if (in_.size() - pos_ < n) return false;
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  absl::string_view in_;
  size_t pos_ = 0;
};

// The body of a state written as magic ‖ body ‖ CRC-32 (StateWriter::Finish), after
// checking the magic and the CRC. Errors: kDataLoss naming `who`.
inline absl::StatusOr<absl::string_view> OpenState(absl::string_view who,
                                                   absl::string_view magic,
                                                   absl::string_view state) {
  if (state.size() < magic.size() + 4 || state.substr(0, magic.size()) != magic) {
    return absl::DataLossError(absl::StrCat(who, ": state has no ", magic, " header"));
  }
  const absl::string_view body = state.substr(0, state.size() - 4);
  uint32_t want;
  std::memcpy(&want, state.data() + body.size(), 4);
  if (static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(body.data()),
                                    body.size())) != want) {
    return absl::DataLossError(absl::StrCat(who, ": state fails its CRC-32 check"));
  }
  return body.substr(magic.size());
}

}  // namespace fedge::aggregation::internal

#endif  // FEDGE_AGGREGATION_STATE_CODEC_H_
