// `fedgectl privacy`: plan a DP-FedAvg budget offline with the RDP accountant
// (privacy/rdp_accountant.h, default orders), before starting a job.
#ifndef FEDGE_SERVER_CTL_PRIVACY_PLAN_H_
#define FEDGE_SERVER_CTL_PRIVACY_PLAN_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/ctl/fedgectl_args.h"

namespace fedge::ctl {

// REQUIRES cmd.kind == kPrivacy (as ParseCtlArgs checked it). The text to print: the inputs,
// then ε after cmd.rounds rounds with the order attaining it; with a target ε, the smallest
// noise multiplier reaching it (and the ε and order it gives). Errors from the accountant.
absl::StatusOr<std::string> PrivacyPlanReport(const CtlCommand& cmd);

}  // namespace fedge::ctl

#endif  // FEDGE_SERVER_CTL_PRIVACY_PLAN_H_
