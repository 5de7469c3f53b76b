// The messages between fedge-sim's ranks (sim/simulator.h, "Over several processes"): rank
// 0 sends each other rank its share of a round's training (every distinct task model and
// teacher once, then per client its index, task header and shuffling seed) and a stop; each
// rank sends back one update, or its error, per job, in order. Fixed-width little-endian
// integers and IEEE doubles (the ranks run the same binary on the same architecture) and
// length-prefixed byte strings; a malformed message is INTERNAL, never a crash.
//
// Internal to the simulator (simulator.cc and its worker ranks).
#ifndef FEDGE_SIM_TRAINING_SHARE_H_
#define FEDGE_SIM_TRAINING_SHARE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/fedcg_device.h"
#include "client/local_trainer.h"
#include "google/protobuf/message_lite.h"
#include "proto/coordinator.pb.h"
#include "proto/model.pb.h"

namespace fedge::sim {

// One client's training: what TrainLocally needs. The pointers outlive the job.
struct TrainingJob {
  int64_t client = 0;
  const v1::TaskHeader* header = nullptr;
  const v1::ModelProto* model = nullptr;
  const v1::ModelProto* teacher = nullptr;  // or null
  uint64_t seed = 0;                        // the client's shuffling seed
  // FedCG tasks: the client's FedCG state (this job trains it alone).
  client::FedCgDevice* fedcg = nullptr;
};

// Fixed-width little-endian integers and IEEE doubles (the ranks run the same binary on the
// same architecture) and length-prefixed byte strings.
inline constexpr char kShareMessage = 'J';  // rank 0 → rank r: a round's share of training jobs
inline constexpr char kStopMessage = 'S';   // rank 0 → rank r: the run is over

class MessageWriter {
 public:
  explicit MessageWriter(char kind) { out_.push_back(kind); }
  void U64(uint64_t v) { out_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    U64(bits);
  }
  void Bytes(std::string_view b) {
    U64(b.size());
    out_.append(b.data(), b.size());
  }
  void Proto(const google::protobuf::MessageLite& m) {
    U64(m.ByteSizeLong());
    m.AppendToString(&out_);
  }
  std::string Take() && { return std::move(out_); }

 private:
  std::string out_;
};

// Reads what MessageWriter wrote; any read past the end or bad proto sets !ok() and yields 0s.
class MessageReader {
 public:
  explicit MessageReader(std::string_view in) : in_(in) {}
  char Kind() {
    if (in_.empty()) {
      Fail();
      return '\0';
    }
    const char k = in_[0];
    in_.remove_prefix(1);
    return k;
  }
  uint64_t U64() {
    uint64_t v = 0;
    if (in_.size() < sizeof v) {
      Fail();
      return 0;
    }
    std::memcpy(&v, in_.data(), sizeof v);
    in_.remove_prefix(sizeof v);
    return v;
  }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  double F64() {
    const uint64_t bits = U64();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  std::string_view Bytes() {
    const uint64_t n = U64();
    if (in_.size() < n) {
      Fail();
      return {};
    }
    std::string_view b = in_.substr(0, n);
    in_.remove_prefix(n);
    return b;
  }
  void Proto(google::protobuf::MessageLite* m) {
    const std::string_view b = Bytes();
    if (ok_ && !m->ParseFromArray(b.data(), static_cast<int>(b.size()))) Fail();
  }
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }

 private:
  void Fail() {
    ok_ = false;
    in_ = {};
  }
  std::string_view in_;
  bool ok_ = true;
};

// What a worker rank holds of a decoded share: the models and headers its jobs point into.
struct Share {
  std::vector<v1::ModelProto> models;
  std::vector<v1::TaskHeader> headers;
  std::vector<TrainingJob> jobs;
};

// A round's share for one rank: every distinct model and teacher once, then the jobs.
std::string EncodeShare(const std::vector<TrainingJob>& jobs);
// Reads a share (after its kind) into `share`, whose models and headers the jobs point
// into. INTERNAL for a malformed share or a client outside [0, population).
absl::Status DecodeShare(MessageReader& r, int64_t population, Share& share);
// One trained update (or its error), rank r → rank 0.
std::string EncodeResult(const absl::StatusOr<client::LocalUpdate>& u);
// The update (or the error) rank `from` sent; INTERNAL for a malformed message.
absl::StatusOr<client::LocalUpdate> DecodeResult(std::string_view bytes, int from);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_TRAINING_SHARE_H_
