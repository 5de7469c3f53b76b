// A FedCG device across the rounds of its jobs (docs/fedcg.md), transport-free: the job's
// client::FedCgClient with the device's PRIVATE extractor E and discriminator D, created at
// the job's first task with the device's seed (FedCgDeviceSeed: the same in every round, so
// E, D and the held-out split stay the device's own), kept across rounds, and, with a state
// path, restored from and saved to "<state file>.fedcg" (device_state.h) so that a restarted
// device continues its job with its E and D (their Adam moments start afresh). A task of
// another job starts a new E and D. The gRPC runtime and fedge-sim's virtual clients both
// hold one per device.
//
//   FedCgDevice device({.state_path = "/var/lib/fedge/client.state.fedcg"});
//   FEDGE_ASSIGN_OR_RETURN(FedCgDeviceData d,
//                          FedCgDevice::PrepareData(task, client_id, raw_examples, eval_or_null));
//   FEDGE_ASSIGN_OR_RETURN(LocalUpdate u, device.RunTask(task, global_c_and_g, client_id, d));
//
// Not thread-safe: one device's rounds, one at a time.
#ifndef FEDGE_CLIENT_FEDCG_DEVICE_H_
#define FEDGE_CLIENT_FEDCG_DEVICE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/fedcg_trainer.h"
#include "client/local_trainer.h"
#include "data/dataset.h"
#include "proto/coordinator.pb.h"
#include "proto/model.pb.h"

namespace fedge::client {

class FedCgDevice final {
 public:
  struct Options {
    // Where E and D are kept between runs ("<state file>.fedcg"); empty: memory only.
    std::string state_path;
  };
  explicit FedCgDevice(Options options) : options_(std::move(options)) {}

  // The device's examples as FedCG takes them (FedCgInputs: resized, [−1, 1]) for `task`'s
  // job: with `eval` (separate test examples, pixels in [0, 1]) it trains on all of `raw` and
  // evaluates on `eval`; without, it holds out task.fed_cg.eval_holdout_fraction of `raw`
  // (FedCgHoldOut, seeded with FedCgDeviceSeed). Errors: FedCgInputs'.
  static absl::StatusOr<FedCgDeviceData> PrepareData(const v1::TaskHeader& task,
                                                     absl::string_view client_id,
                                                     const data::Dataset& raw,
                                                     const data::Dataset* eval);

  // One FedCG task: the job's FedCgClient (made, or restored, at the job's first task), then
  // FedCgDeviceRound (evaluation, training; Δ of C.* and G.* only), then E and D saved when
  // there is a state path (a failure to save is logged: a restart then starts afresh).
  // Errors: FedCgClient::Create's and FedCgDeviceRound's (CANCELLED when `cancelled`).
  absl::StatusOr<LocalUpdate> RunTask(const v1::TaskHeader& task, const v1::ModelProto& global,
                                      absl::string_view client_id, const FedCgDeviceData& data,
                                      const std::function<bool()>& cancelled = nullptr);

  // The current job's client (null before the first task): its private E and D.
  FedCgClient* client() { return client_.get(); }
  // Jobs whose E and D were restored from the state path.
  int64_t states_restored() const { return states_restored_; }

 private:
  // The job's client for `task`: the current one, or a new one (restored when saved).
  absl::Status ClientFor(const v1::TaskHeader& task, absl::string_view client_id);
  void Save(const std::string& job_id);

  const Options options_;
  std::unique_ptr<FedCgClient> client_;
  std::string job_id_;
  int64_t states_restored_ = 0;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_FEDCG_DEVICE_H_
