// Job configs as operators write them: protobuf text format of fedge.v1.JobConfig
// (proto/job.proto documents every field and its default).
//
//   FEDGE_ASSIGN_OR_RETURN(v1::JobConfig parsed, ParseJobConfig(text, "job.textproto"));
//   FEDGE_ASSIGN_OR_RETURN(v1::JobConfig job, ValidateJobConfig(parsed));
//
// Errors are INVALID_ARGUMENT and start with "JobConfig: ". Parse errors carry the source
// name, line and column (1-based) and the parser's message, which names an unknown field
// ("... has no field named \"foo\""). Validation errors name every offending field by its
// path ("local_training.batch_size must be > 0, got 0").
#ifndef FEDGE_SERVER_JOB_CONFIG_H_
#define FEDGE_SERVER_JOB_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/job.pb.h"

namespace fedge::server {

// Largest job text accepted (a job is a few hundred bytes; an inline ModelSpec a few KiB).
inline constexpr size_t kMaxJobConfigTextBytes = 1 << 20;

// Bounds that keep one job from asking for absurd resources.
inline constexpr int kMaxRounds = 1000000;
inline constexpr int kMaxClientsPerRound = 1000000;
inline constexpr int kMaxLocalEpochs = 10000;
inline constexpr int kMaxBatchSize = 1 << 16;
inline constexpr int kMaxKeepCheckpoints = 1000;
inline constexpr double kMaxDeadlineSeconds = 7 * 24 * 3600.0;

// Defaults ValidateJobConfig fills in (see proto/job.proto).
inline constexpr int kDefaultClientsPerRound = 10;
inline constexpr double kDefaultDeadlineSeconds = 600.0;
// Most parameters a job's model may have (64 MiB of fp32 values; every device and the
// coordinator hold several copies), checked from the spec before anything is built.
inline constexpr int64_t kMaxJobParameters = int64_t{1} << 24;
// RoundPolicy.max_failed_attempts when unset.
inline constexpr int kDefaultMaxFailedAttempts = 5;
inline constexpr int kDefaultKeepCheckpoints = 3;
inline constexpr char kDefaultEvaluationDataset[] = "fashion-mnist";

// Parses text format. Unknown fields, unknown enum values and syntax errors are errors;
// nothing is validated beyond syntax. `source` names the text in messages (a file name).
absl::StatusOr<v1::JobConfig> ParseJobConfig(absl::string_view text,
                                             absl::string_view source = "job config");

// Checks every field against proto/job.proto's rules and returns a copy with the
// documented defaults filled in (optional fields set, UNSPECIFIED enums resolved, the
// strategy set, `architecture` resolved into `model_spec`). Idempotent: validating a
// validated config returns it unchanged.
absl::StatusOr<v1::JobConfig> ValidateJobConfig(const v1::JobConfig& config);

// Parse + validate.
absl::StatusOr<v1::JobConfig> LoadJobConfig(absl::string_view text,
                                            absl::string_view source = "job config");

}  // namespace fedge::server

#endif  // FEDGE_SERVER_JOB_CONFIG_H_
