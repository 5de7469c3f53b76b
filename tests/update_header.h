// The UpdateHeader a device sends for a task (credentials, job, round, task id, example
// count): one definition for the coordinator test suites.
#ifndef FEDGE_TESTS_UPDATE_HEADER_H_
#define FEDGE_TESTS_UPDATE_HEADER_H_

#include <cstdint>
#include <string>

#include "proto/coordinator.pb.h"

namespace fedge::testing {

inline v1::UpdateHeader UpdateHeaderFor(const std::string& client_id, const std::string& token,
                                        const v1::TaskHeader& task, int64_t num_examples) {
  v1::UpdateHeader h;
  h.set_client_id(client_id);
  h.set_session_token(token);
  h.set_job_id(task.job_id());
  h.set_round(task.round());
  h.set_task_id(task.task_id());
  h.set_num_examples(num_examples);
  return h;
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_UPDATE_HEADER_H_
