#include "server/ctl/privacy_plan.h"

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "privacy/rdp_accountant.h"

namespace fedge::ctl {

absl::StatusOr<std::string> PrivacyPlanReport(const CtlCommand& cmd) {
  const std::vector<double> orders = privacy::DefaultRdpOrders();
  double z = cmd.noise_multiplier;
  std::string out;
  if (cmd.target_epsilon > 0) {
    FEDGE_ASSIGN_OR_RETURN(z, privacy::NoiseMultiplierForEpsilon(cmd.target_epsilon, cmd.delta,
                                                                 cmd.sampling_rate, cmd.rounds,
                                                                 orders, 1e-4));
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<double> rdp,
                         privacy::ComputeRdp(cmd.sampling_rate, z, cmd.rounds, orders));
  FEDGE_ASSIGN_OR_RETURN(privacy::EpsilonAndOrder e,
                         privacy::EpsilonFromRdp(orders, rdp, cmd.delta));
  absl::StrAppendFormat(&out, "sampling rate q %g  rounds %d  delta %g\n", cmd.sampling_rate,
                        cmd.rounds, cmd.delta);
  if (cmd.target_epsilon > 0) {
    absl::StrAppendFormat(&out, "noise multiplier %.4f reaches epsilon <= %g\n", z,
                          cmd.target_epsilon);
  } else {
    absl::StrAppendFormat(&out, "noise multiplier %g\n", z);
  }
  absl::StrAppendFormat(&out, "epsilon %.4f at RDP order %g (Renyi accountant, sampled Gaussian)\n",
                        e.epsilon, e.order);
  return out;
}

}  // namespace fedge::ctl
