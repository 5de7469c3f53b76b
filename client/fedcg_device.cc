#include "client/fedcg_device.h"

#include <utility>
#include <vector>

#include "base/log.h"
#include "base/status_macros.h"
#include "client/device_round.h"
#include "client/device_state.h"
#include "model/fedcg_nets.h"
#include "model/sequential.h"

namespace fedge::client {
namespace {

// E's and D's parameters: what the device keeps to itself.
std::vector<model::Parameter*> PrivateParameters(FedCgClient& c) {
  std::vector<model::Parameter*> params = c.extractor().parameters();
  for (model::Parameter* p : c.discriminator().parameters()) params.push_back(p);
  return params;
}

}  // namespace

absl::StatusOr<FedCgDeviceData> FedCgDevice::PrepareData(const v1::TaskHeader& task,
                                                         absl::string_view client_id,
                                                         const data::Dataset& raw,
                                                         const data::Dataset* eval) {
  const model::FedCgShape shape = model::FedCgShapeFromParams(task.fed_cg());
  FEDGE_ASSIGN_OR_RETURN(data::Dataset inputs, FedCgInputs(raw, shape));
  if (eval == nullptr || eval->num_examples == 0) {
    return FedCgHoldOut(std::move(inputs), task.fed_cg().eval_holdout_fraction(),
                        FedCgDeviceSeed(task, client_id));
  }
  FedCgDeviceData d;
  d.train = std::move(inputs);
  FEDGE_ASSIGN_OR_RETURN(d.eval, FedCgInputs(*eval, shape));
  return d;
}

absl::Status FedCgDevice::ClientFor(const v1::TaskHeader& task, absl::string_view client_id) {
  if (client_ != nullptr && job_id_ == task.job_id()) return absl::OkStatus();
  FEDGE_ASSIGN_OR_RETURN(client_, FedCgClient::Create(model::FedCgShapeFromParams(task.fed_cg()),
                                                      FedCgOptionsFromTask(task),
                                                      FedCgDeviceSeed(task, client_id)));
  job_id_ = task.job_id();
  if (options_.state_path.empty()) return absl::OkStatus();
  // A restarted device continues the job with the E and D it had (not their moments).
  absl::StatusOr<v1::ModelProto> saved = LoadFedCgPrivateState(options_.state_path);
  if (saved.ok() && saved->spec().name() == task.job_id()) {
    if (absl::Status s = SetParametersByName(PrivateParameters(*client_), *saved, /*exact=*/true);
        s.ok()) {
      ++states_restored_;
      FEDGE_LOG(INFO) << "job " << task.job_id() << ": FedCG extractor and discriminator "
                      << "restored from " << options_.state_path;
    } else {
      FEDGE_LOG(WARNING) << options_.state_path << ": " << s.message() << "; starting afresh";
    }
  } else if (!saved.ok() && !absl::IsNotFound(saved.status())) {
    FEDGE_LOG(WARNING) << saved.status().message() << "; starting afresh";
  }
  return absl::OkStatus();
}

void FedCgDevice::Save(const std::string& job_id) {
  // E and D as they now are, for a restart (mode 0600 beside the state file).
  v1::ModelProto state;
  state.mutable_spec()->set_name(job_id);
  for (const model::Parameter* p : PrivateParameters(*client_)) {
    v1::TensorProto* out = state.add_parameters();
    out->set_name(p->name);
    for (int d : p->shape) out->add_shape(d);
    out->mutable_values()->Assign(p->value.begin(), p->value.end());
  }
  if (absl::Status s = SaveFedCgPrivateState(options_.state_path, state); !s.ok()) {
    FEDGE_LOG(WARNING) << s.message() << " (a restart will start a new extractor)";
  }
}

absl::StatusOr<LocalUpdate> FedCgDevice::RunTask(const v1::TaskHeader& task,
                                                 const v1::ModelProto& global,
                                                 absl::string_view client_id,
                                                 const FedCgDeviceData& data,
                                                 const std::function<bool()>& cancelled) {
  FEDGE_RETURN_IF_ERROR(ClientFor(task, client_id));
  FEDGE_ASSIGN_OR_RETURN(LocalUpdate u, FedCgDeviceRound(*client_, global, data,
                                                         static_cast<int>(task.round() - 1),
                                                         cancelled));
  if (!options_.state_path.empty()) Save(task.job_id());
  return u;
}

}  // namespace fedge::client
