// Centralized training on Fashion-MNIST: the baseline every federated run is compared with,
// and the proof that fedge's layers, kernels and data path learn.
//
//   build/bin/centralized_fmnist --model cnn --mode int8 --metrics-out cnn_int8.jsonl
//
// Prints one progress line per epoch and, with --metrics-out, writes one JSON object per
// epoch: epoch, train_loss, train_accuracy, test_loss, test_accuracy, learning_rate,
// seconds (training time of the epoch), samples_per_second, and mode/model.
// Defaults are the schedule that meets the foundation's accuracy bar: SGD with Nesterov
// momentum 0.9, batch 64, a one-epoch linear warm-up to --lr then cosine decay to zero.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "data/idx_reader.h"
#include "kernels/cpu.h"
#include "model/centralized.h"
#include "model/serialize.h"
#include "model/trainer.h"

ABSL_FLAG(std::string, model, "mlp", "architecture: mlp (784-200-200-10) or cnn (SimpleCNN)");
ABSL_FLAG(std::string, mode, "fp32", "local compute: fp32, or int8 (quantization-aware)");
ABSL_FLAG(int, epochs, 15, "training epochs");
ABSL_FLAG(int, batch, 64, "mini-batch size");
ABSL_FLAG(double, lr, 0.05, "peak learning rate");
ABSL_FLAG(double, momentum, 0.9, "SGD (Nesterov) momentum");
ABSL_FLAG(double, weight_decay, 5e-4, "L2 weight decay");
ABSL_FLAG(uint64_t, seed, 1, "seed for initialization and shuffling");
ABSL_FLAG(int, train_examples, 0, "use only the first N training examples (0: all 60000)");
ABSL_FLAG(std::string, data_dir, fedge::data::kFashionMnistDir, "Fashion-MNIST IDX directory");
ABSL_FLAG(std::string, metrics_out, "",
          "write one JSON object per epoch to this file (--metrics-out works too)");
ABSL_FLAG(std::string, save, "", "save the trained model (ModelProto) to this file");

namespace fedge {
namespace {

absl::StatusOr<model::ComputeMode> ParseMode(const std::string& s) {
  if (s == "fp32") return model::ComputeMode::kFp32;
  if (s == "int8") return model::ComputeMode::kInt8;
  return absl::InvalidArgumentError(
      absl::StrFormat("--mode must be fp32 or int8 (int4 is inference only), got '%s'", s));
}

absl::Status Run() {
  model::CentralizedOptions options;
  options.architecture = absl::GetFlag(FLAGS_model);
  FEDGE_ASSIGN_OR_RETURN(options.mode, ParseMode(absl::GetFlag(FLAGS_mode)));
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch);
  options.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  options.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  options.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  options.seed = absl::GetFlag(FLAGS_seed);

  FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm,
                         data::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  if (const int n = absl::GetFlag(FLAGS_train_examples); n > 0 && n < fm.train.num_examples) {
    std::vector<int> first(n);
    for (int i = 0; i < n; ++i) first[i] = i;
    fm.train = data::Subset(fm.train, first);
  }
  data::Standardize(fm.train, data::kFashionMnistMean, data::kFashionMnistStd);
  data::Standardize(fm.test, data::kFashionMnistMean, data::kFashionMnistStd);

  std::ofstream metrics;
  if (const std::string path = absl::GetFlag(FLAGS_metrics_out); !path.empty()) {
    metrics.open(path, std::ios::trunc);
    if (!metrics) return absl::UnavailableError("cannot write --metrics_out file " + path);
  }
  const std::string mode_name(model::ComputeModeName(options.mode));
  std::printf("centralized_fmnist: %s, %s, %d epochs of %d examples, batch %d, kernels %s\n",
              options.architecture.c_str(), mode_name.c_str(), options.epochs,
              fm.train.num_examples, options.batch_size,
              kernels::IsaName(kernels::BestIsa()));
  auto on_epoch = [&](const model::CentralizedEpoch& e) {
    const double sps = e.train.examples / e.train.seconds;
    std::printf("epoch %2d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  %.1fs "
                "(%.0f samples/s)\n",
                e.epoch, options.epochs, e.train.loss, e.train.accuracy, e.test.loss,
                e.test.accuracy, e.train.seconds, sps);
    std::fflush(stdout);
    if (metrics.is_open()) {
      metrics << absl::StrFormat(
          "{\"epoch\":%d,\"model\":\"%s\",\"mode\":\"%s\",\"train_loss\":%.6f,"
          "\"train_accuracy\":%.6f,\"test_loss\":%.6f,\"test_accuracy\":%.6f,"
          "\"learning_rate\":%.6g,\"seconds\":%.3f,\"samples_per_second\":%.1f}\n",
          e.epoch, options.architecture, mode_name, e.train.loss, e.train.accuracy, e.test.loss,
          e.test.accuracy, e.learning_rate, e.train.seconds, sps);
      metrics.flush();
    }
  };
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> net,
                         model::TrainCentralized(options, fm.train, fm.test, on_epoch));
  // The same weights through every inference mode, for reference.
  const model::EvalResult fp32 = model::Evaluate(*net, fm.test, model::ComputeMode::kFp32);
  const model::EvalResult int8 = model::Evaluate(*net, fm.test, model::ComputeMode::kInt8);
  const model::EvalResult int4 = model::Evaluate(*net, fm.test, model::ComputeMode::kInt4);
  std::printf("final test accuracy of the %s-trained weights: fp32 %.4f, int8 %.4f, "
              "int4-weight %.4f inference\n",
              mode_name.c_str(), fp32.accuracy, int8.accuracy, int4.accuracy);
  if (const std::string path = absl::GetFlag(FLAGS_save); !path.empty()) {
    FEDGE_RETURN_IF_ERROR(model::SaveModel(path, net->ToProto()));
    std::printf("saved model to %s\n", path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains an mlp or cnn on Fashion-MNIST on one machine.\n"
      "  centralized_fmnist --model cnn --mode int8 --epochs 15 --metrics-out m.jsonl");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "centralized_fmnist: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
