// Client shard files: one client's slice of a partitioned dataset, written by the simulator
// or a data-prep tool and read back by that client.
//
// Format, version 1, all integers little-endian:
//   offset 0   8 bytes   magic "FEDGESHD"
//          8   uint32    version (1)
//         12   uint32    num_examples (<= kShardMaxExamples; 0 allowed)
//         16   uint32    num_classes (1 .. kShardMaxClasses)
//         20   uint32    rank (0 .. kShardMaxRank)
//         24   uint32    dims[rank] (each >= 1; product <= kShardMaxFeatureSize)
//              int32     labels[num_examples], each in [0, num_classes)
//              float32   features[num_examples × prod(dims)] (IEEE-754 binary32), finite
//              uint32    CRC-32 (zlib crc32) of every byte before it
// The file length must be exactly what the header implies.
//
// Writes are atomic: a temporary file in the same directory, fsync, then rename over `path`,
// so a reader sees the old file or the new one, never a torn one.
//
// Errors name the file: "Shard: <path>: <what>".
//   kNotFound          the file does not exist (ReadShard);
//   kDataLoss          the file is shorter or longer than its header implies, or the CRC
//                      does not match;
//   kInvalidArgument   bad magic, a value out of bounds, a label out of range, a non-finite
//                      feature; for the writers, a Dataset that fails ValidateDataset() or
//                      exceeds the bounds, or a partition index out of range;
//   kUnimplemented     a version this reader does not know;
//   kUnavailable / kPermissionDenied  I/O failures.
#ifndef FEDGE_DATA_SHARD_H_
#define FEDGE_DATA_SHARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/partition.h"

namespace fedge::data {

inline constexpr char kShardMagic[8] = {'F', 'E', 'D', 'G', 'E', 'S', 'H', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kShardMaxExamples = 10'000'000;
inline constexpr uint32_t kShardMaxClasses = 1 << 20;
inline constexpr uint32_t kShardMaxRank = 8;
inline constexpr uint64_t kShardMaxFeatureSize = uint64_t{1} << 24;

// Writes `data` to `path` atomically (see above).
absl::Status WriteShard(const std::string& path, const Dataset& data);

struct ShardReadOptions {
  // Keep the features in 8-bit storage (Dataset::features_u8) when every value is an 8-bit
  // image's (data/dataset.h): decided while reading, so the file's floats are never all held
  // at once; a shard with any other value is read as floats. Devices do (fedge-client).
  bool compact_u8 = false;
};

// Reads and fully validates a shard file.
absl::StatusOr<Dataset> ReadShard(const std::string& path, const ShardReadOptions& options = {});

// dir/client-00000.shard, dir/client-00001.shard, ...: the shard file of client `client`.
std::string ShardPath(const std::string& dir, int client);

// Creates `dir` if needed and writes Subset(data, parts[i]) to ShardPath(dir, i) for every
// client i. Indices must be in range; they need not be disjoint. Stops at the first error.
absl::Status WritePartition(const std::string& dir, const Dataset& data,
                            const ClientIndices& parts);

// Text shard files: one device's documents, for language-model tasks.
//
// Format, version 1, all integers little-endian:
//   offset 0   8 bytes   magic "FEDGETXT"
//          8   uint32    version (1)
//         12   uint32    num_documents (<= kTextShardMaxDocuments; 0 allowed)
//   then per document:
//              uint32    id_bytes (<= kTextShardMaxIdBytes), the id's bytes
//              uint32    text_bytes, the text's bytes (any bytes)
//              uint32    CRC-32 (zlib crc32) of every byte before it
// The whole file is at most kTextShardMaxBytes and must be exactly what its lengths imply.
// Writes are atomic, and errors name the file, as for image shards; a reader checks the
// size before it allocates, then the CRC before it parses.
inline constexpr char kTextShardMagic[8] = {'F', 'E', 'D', 'G', 'E', 'T', 'X', 'T'};
inline constexpr uint32_t kTextShardVersion = 1;
inline constexpr uint32_t kTextShardMaxDocuments = 100'000;
inline constexpr uint32_t kTextShardMaxIdBytes = 256;
inline constexpr uint64_t kTextShardMaxBytes = uint64_t{256} << 20;

struct TextDocument {
  std::string id;    // e.g. the Brown corpus's "ck01"
  std::string text;
};

absl::Status WriteTextShard(const std::string& path, const std::vector<TextDocument>& docs);
absl::StatusOr<std::vector<TextDocument>> ReadTextShard(const std::string& path);

}  // namespace fedge::data

#endif  // FEDGE_DATA_SHARD_H_
