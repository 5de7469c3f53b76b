// Readers for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/),
// gzip-compressed or plain (zlib reads both transparently).
//
// Only the two layouts those datasets use are accepted:
//   images: magic 0x00000803 (unsigned bytes, 3 dims), then big-endian uint32 n, rows, cols,
//           then n × rows × cols pixel bytes;
//   labels: magic 0x00000801 (unsigned bytes, 1 dim), then big-endian uint32 n, then n bytes.
// Bounds: n <= kIdxMaxExamples, 1 <= rows, cols <= kIdxMaxSide, n × rows × cols <=
// kIdxMaxPixels. Bytes after the promised payload are ignored.
//
// Pixels become floats in [0, 1] (byte / 255). Any further normalization (mean/std
// standardization, centring) is the caller's choice. Examples have shape {1, rows, cols}.
//
// Errors name the file: "IdxReader: <path>: <what>".
//   kNotFound         the file does not exist;
//   kPermissionDenied the file cannot be read;
//   kDataLoss         corrupt gzip stream, or fewer bytes than the header promises;
//   kInvalidArgument  wrong magic, dimensions out of bounds, a label >= num_classes,
//                     image and label counts that differ.
#ifndef FEDGE_DATA_IDX_READER_H_
#define FEDGE_DATA_IDX_READER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace fedge::data {

inline constexpr uint32_t kIdxImagesMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;
inline constexpr int64_t kIdxMaxExamples = 10'000'000;
inline constexpr int64_t kIdxMaxSide = 4096;
inline constexpr int64_t kIdxMaxPixels = int64_t{1} << 31;  // 2 GiB of bytes, 8 GiB of floats

// How the images are held: floats in [0, 1] (Dataset::features), or their bytes in 8-bit
// storage (Dataset::features_u8, a quarter of the memory, the same values: data/dataset.h).
enum class IdxStorage { kFloat, kU8 };

// Reads an images file and a labels file into one Dataset with num_classes classes.
absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, int num_classes = 10,
                                       IdxStorage storage = IdxStorage::kFloat);

struct FashionMnist {
  Dataset train;  // 60000 examples
  Dataset test;   // 10000 examples
};

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
// Pixel mean and standard deviation of the Fashion-MNIST training set (pixels in [0, 1]),
// for data::Standardize.
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;

// Loads dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (Debian's dataset-fashion-mnist).
absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& dir = kFashionMnistDir,
                                              IdxStorage storage = IdxStorage::kFloat);
// The test split alone (dir/t10k-*): what an evaluator needs, without the 60,000 training
// examples' 188 MB.
absl::StatusOr<Dataset> LoadFashionMnistTest(const std::string& dir = kFashionMnistDir,
                                             IdxStorage storage = IdxStorage::kFloat);

}  // namespace fedge::data

#endif  // FEDGE_DATA_IDX_READER_H_
