// Data files a device or the coordinator opens: IDX image/label pairs (plain or gzip),
// fedge shards and text shards. Input: [1 byte: 0 = shard, 1 = text shard, else IDX]
// [2 bytes LE: length of the images file] [images] [labels] (for a shard or text shard, the
// rest is the file). Invariants: a dataset that loads is consistent (ValidateDataset); a
// text shard that loads writes back and reads back the same documents.
#include <cstdint>

#include "data/dataset.h"
#include "data/idx_reader.h"
#include "data/shard.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  static auto* images = new fedge::fuzz::ScratchFile("images");
  static auto* labels = new fedge::fuzz::ScratchFile("labels");
  const char* bytes = reinterpret_cast<const char*>(data);
  absl::StatusOr<fedge::data::Dataset> loaded;
  if (data[0] == 1) {
    auto docs = fedge::data::ReadTextShard(images->Write(absl::string_view(bytes + 1, size - 1)));
    if (!docs.ok()) return 0;
    FEDGE_FUZZ_ASSERT(fedge::data::WriteTextShard(labels->path(), *docs).ok());
    auto again = fedge::data::ReadTextShard(labels->path());
    FEDGE_FUZZ_ASSERT(again.ok() && again->size() == docs->size());
    for (size_t i = 0; i < docs->size(); ++i) {
      FEDGE_FUZZ_ASSERT((*again)[i].id == (*docs)[i].id && (*again)[i].text == (*docs)[i].text);
    }
    return 0;
  }
  if (data[0] == 0) {
    loaded = fedge::data::ReadShard(images->Write(absl::string_view(bytes + 1, size - 1)));
  } else {
    const size_t m = std::min<size_t>(data[1] | (size_t{data[2]} << 8), size - 3);
    loaded = fedge::data::LoadIdxDataset(images->Write(absl::string_view(bytes + 3, m)),
                                         labels->Write(absl::string_view(bytes + 3 + m, size - 3 - m)),
                                         1 + data[0] % 16);
  }
  if (loaded.ok()) FEDGE_FUZZ_ASSERT(fedge::data::ValidateDataset(*loaded).ok());
  return 0;
}
