// Command-line helpers shared by fedge's binaries.
#ifndef FEDGE_BASE_FLAGS_H_
#define FEDGE_BASE_FLAGS_H_

namespace fedge::base {

// Abseil flags are C identifiers (--metrics_out); users also type them with dashes
// (--metrics-out). Rewrites the name part of every "--a-b" or "--a-b=value" argument to
// underscores, in place, before absl::ParseCommandLine. Values and positional arguments
// are left alone; "--" ends flag processing.
void AcceptDashedFlags(int argc, char** argv);

}  // namespace fedge::base

#endif  // FEDGE_BASE_FLAGS_H_
