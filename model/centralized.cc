#include "model/centralized.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "data/batcher.h"
#include "model/lr_schedule.h"
#include "model/optimizer.h"
#include "model/zoo.h"

namespace fedge::model {

absl::StatusOr<std::unique_ptr<Sequential>> TrainCentralized(
    const CentralizedOptions& options, const data::Dataset& train, const data::Dataset& test,
    const std::function<void(const CentralizedEpoch&)>& on_epoch) {
  if (options.epochs < 1 || options.batch_size < 1 || options.batch_size > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainCentralized: need epochs ≥ 1 and batch_size in [1, 65536], got ",
                     options.epochs, " and ", options.batch_size));
  }
  if (options.mode == ComputeMode::kInt4) {
    return absl::InvalidArgumentError("TrainCentralized: int4 is for inference only");
  }
  FEDGE_RETURN_IF_ERROR(data::ValidateDataset(train));
  FEDGE_RETURN_IF_ERROR(data::ValidateDataset(test));
  FEDGE_ASSIGN_OR_RETURN(v1::ModelSpec spec, ArchitectureByName(options.architecture));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Sequential> net, Sequential::Create(spec));
  for (const data::Dataset* d : {&train, &test}) {
    if (static_cast<int>(d->feature_size()) != net->input_size() ||
        d->num_classes != net->output_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TrainCentralized: data has ", d->feature_size(), " features and ", d->num_classes,
          " classes; model '", options.architecture, "' takes ", net->input_size(), " and ",
          net->output_size()));
    }
  }
  net->InitParameters(options.seed);
  SgdOptions sgd_options;
  sgd_options.learning_rate = options.learning_rate;
  sgd_options.momentum = options.momentum;
  sgd_options.weight_decay = options.weight_decay;
  sgd_options.nesterov = options.momentum > 0;
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Sgd> sgd, Sgd::Create(sgd_options));

  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<data::Batcher> batcher,
                         data::Batcher::Create(train, data::AllIndices(train),
                                               options.batch_size, /*shuffle=*/true,
                                               options.seed));
  const int64_t steps_per_epoch = batcher->num_batches();
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const int64_t warmup = std::min<int64_t>(steps_per_epoch, total_steps / 4);
  TrainEpochOptions train_options;
  train_options.mode = options.mode;
  train_options.learning_rate =
      WarmupCosineSchedule(options.learning_rate, warmup, total_steps);
  int64_t step = 0;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    CentralizedEpoch e;
    e.epoch = epoch;
    e.learning_rate = train_options.learning_rate(step);
    e.train = TrainEpoch(*net, *sgd, *batcher, train_options, &step);
    e.test = Evaluate(*net, test, options.mode);
    if (on_epoch) on_epoch(e);
  }
  return net;
}

}  // namespace fedge::model
