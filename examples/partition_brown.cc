// Writes the Brown corpus's fiction as devices' text shards (data/shard.h) for language-model
// fine-tuning: one document per device (126) or one genre per device (6), each document's
// training part (its last 10% is held out), plus the held-out fiction and non-fiction text as
// two more shards for evaluation.
//
//   build/bin/partition_brown --by document --out out/lm/shards
//
// Files: OUT/client-00000.txtshard … and OUT/fiction-test.txtshard,
// OUT/nonfiction-test.txtshard. Prints each device's documents and bytes.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "data/brown.h"
#include "data/shard.h"

ABSL_FLAG(std::string, corpus, "", "the Brown corpus directory (default: the datasets cache)");
ABSL_FLAG(std::string, by, "document", "document (126 devices) or genre (6 devices)");
ABSL_FLAG(std::string, out, "out/lm/shards", "output directory");

namespace fedge {
namespace {

std::vector<data::TextDocument> AsText(const std::vector<data::BrownDocument>& docs) {
  std::vector<data::TextDocument> out;
  for (const auto& d : docs) out.push_back({d.id, d.text});
  return out;
}

absl::Status Run() {
  const std::string by = absl::GetFlag(FLAGS_by);
  if (by != "document" && by != "genre") {
    return absl::InvalidArgumentError("--by must be document or genre");
  }
  const std::string dir = absl::GetFlag(FLAGS_corpus).empty() ? data::DefaultBrownDir()
                                                              : absl::GetFlag(FLAGS_corpus);
  FEDGE_ASSIGN_OR_RETURN(std::vector<data::BrownDocument> docs, data::LoadBrownCorpus(dir));
  const data::BrownSplit split = data::SplitBrown(docs);
  const auto devices = data::PartitionBrown(
      split.finetune, by == "genre" ? data::BrownPartition::kByGenre
                                    : data::BrownPartition::kByDocument);
  const std::string out = absl::GetFlag(FLAGS_out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return absl::UnavailableError("partition_brown: cannot create " + out);
  for (size_t i = 0; i < devices.size(); ++i) {
    const std::string path = absl::StrFormat("%s/client-%05d.txtshard", out, i);
    FEDGE_RETURN_IF_ERROR(data::WriteTextShard(path, devices[i]));
    size_t bytes = 0;
    for (const auto& d : devices[i]) bytes += d.text.size();
    std::printf("device %3zu: %2zu documents (%s … %s), %zu bytes\n", i, devices[i].size(),
                devices[i].front().id.c_str(), devices[i].back().id.c_str(), bytes);
  }
  FEDGE_RETURN_IF_ERROR(
      data::WriteTextShard(out + "/fiction-test.txtshard", AsText(split.finetune_test)));
  FEDGE_RETURN_IF_ERROR(
      data::WriteTextShard(out + "/nonfiction-test.txtshard", AsText(split.pretrain_test)));
  std::printf("partition_brown: %zu device shards by %s and the held-out test text in %s\n",
              devices.size(), by.c_str(), out.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes the Brown fiction as devices' text shards.\n"
      "  partition_brown --by document|genre --out out/lm/shards");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "partition_brown: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
