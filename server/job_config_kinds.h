// The job checks of the two kinds of job whose model is not a model_spec of layers: a
// language model (LoRA over a base file) and FedCG (its own networks). Internal to
// server/job_config.cc, which calls them from ValidateJobConfig; each problem is added
// to `p` naming its field.
#ifndef FEDGE_SERVER_JOB_CONFIG_KINDS_H_
#define FEDGE_SERVER_JOB_CONFIG_KINDS_H_

#include "proto/job.pb.h"
#include "server/config_text.h"

namespace fedge::server::job_config_internal {

// A language-model job: what it names and what it cannot have.
void CheckLanguageModel(v1::JobConfig& job, ConfigProblems& p);
// Its evaluation names no image data.
void CheckLanguageModelEvaluation(const v1::JobConfig& job, ConfigProblems& p);
// FedCG's local training defaults, filled before the generic ones.
void FillFedCgTrainingDefaults(v1::LocalTraining& t);
// A FedCG job: its networks, and what it cannot run with.
void CheckFedCg(v1::JobConfig& job, ConfigProblems& p);

}  // namespace fedge::server::job_config_internal

#endif  // FEDGE_SERVER_JOB_CONFIG_KINDS_H_
