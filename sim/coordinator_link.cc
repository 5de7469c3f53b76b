#include "sim/coordinator_link.h"

namespace fedge::sim {

absl::Status CoordinatorLink::Upload(const v1::TaskHeader&, const client::EncodedUpdate& update) {
  v1::UpdateHeader header = update.header;
  header.set_session_token(session_token_);
  if (on_upload_ != nullptr && *on_upload_) (*on_upload_)(header, update.payload);
  return coordinator_.SubmitPayload(header, update.payload);
}

absl::Status CoordinatorLink::Decline(const v1::TaskHeader&, const v1::UpdateHeader& header) {
  v1::UpdateHeader h = header;
  h.set_session_token(session_token_);
  return coordinator_.DeclineTask(h);
}

absl::StatusOr<v1::SecAggStepResponse> CoordinatorLink::SecureAggregationStep(
    const v1::TaskHeader& task, v1::SecAggStepRequest request) {
  request.set_client_id(client_id_);
  request.set_session_token(session_token_);
  request.set_job_id(task.job_id());
  request.set_round(task.round());
  request.set_task_id(task.task_id());
  return coordinator_.SecureAggregationStep(request);
}

}  // namespace fedge::sim
