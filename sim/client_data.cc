#include "sim/client_data.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "data/bpe.h"
#include "data/brown.h"
#include "data/idx_reader.h"
#include "data/partition.h"
#include "data/preprocessing.h"
#include "data/token_windows.h"
#include "model/serialize.h"
#include "server/round_report.h"
#include "sim/attacks.h"
#include "sim/device_model.h"

namespace fedge::sim {
namespace {

constexpr uint64_t kCentreStream = 0x73796e7468000001ULL;
constexpr uint64_t kClientStream = 0x73796e7468000002ULL;
constexpr uint64_t kTestStream = 0x73796e7468000003ULL;
constexpr int kMaxDirichletGroups = 100;

class FashionMnistSource final : public ClientDataSource {
 public:
  FashionMnistSource(data::Dataset train, std::shared_ptr<const data::Dataset> test,
                     data::ClientIndices shards)
      : train_(std::move(train)), test_(std::move(test)), shards_(std::move(shards)) {}

  data::Dataset ClientData(int64_t client) const override {
    return data::Subset(train_, shards_[static_cast<size_t>(client % Shards())]);
  }
  int64_t NumExamples(int64_t client) const override {
    return static_cast<int64_t>(shards_[static_cast<size_t>(client % Shards())].size());
  }
  std::shared_ptr<const data::Dataset> TestData() const override { return test_; }
  data::Dataset ClientTestData(int64_t client) const override {
    if (client_tests_.empty()) return data::Dataset();
    return data::Subset(*test_, client_tests_[static_cast<size_t>(client % Shards())]);
  }
  // FashionMnistData.client_test_sets: per shard, its test-half indices into the test split.
  void SetClientTests(data::ClientIndices tests) { client_tests_ = std::move(tests); }

 private:
  int64_t Shards() const { return static_cast<int64_t>(shards_.size()); }
  const data::Dataset train_;
  const std::shared_ptr<const data::Dataset> test_;
  const data::ClientIndices shards_;
  data::ClientIndices client_tests_;
};

class SyntheticSource final : public ClientDataSource {
 public:
  explicit SyntheticSource(const v1::SyntheticData& c) : c_(c) {
    const int f = c_.features();
    centres_.resize(static_cast<size_t>(c_.classes()) * f);
    base::Rng rng(MixSeed(c_.seed(), kCentreStream));
    const double scale = c_.separation() / std::sqrt(static_cast<double>(f));
    for (float& v : centres_) v = static_cast<float>(scale * rng.Normal());
    base::Rng test_rng(MixSeed(c_.seed(), kTestStream));
    test_ = std::make_shared<const data::Dataset>(Generate(c_.test_examples(), {}, test_rng));
  }

  data::Dataset ClientData(int64_t client) const override {
    base::Rng rng(MixSeed(c_.seed(), kClientStream), static_cast<uint64_t>(client));
    std::vector<double> mix;
    if (c_.label_alpha() > 0) mix = rng.Dirichlet(c_.label_alpha(), c_.classes());
    return Generate(c_.examples_per_client(), mix, rng);
  }
  int64_t NumExamples(int64_t) const override { return c_.examples_per_client(); }
  std::shared_ptr<const data::Dataset> TestData() const override { return test_; }

 private:
  // n examples with labels uniform (empty `mix`) or drawn from `mix`.
  data::Dataset Generate(int n, const std::vector<double>& mix, base::Rng& rng) const {
    const int f = c_.features();
    data::Dataset d;
    d.num_examples = n;
    d.shape = {f};
    d.num_classes = c_.classes();
    d.features.resize(static_cast<size_t>(n) * f);
    d.labels.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      int y = 0;
      if (mix.empty()) {
        y = static_cast<int>(rng.UniformInt(static_cast<uint64_t>(c_.classes())));
      } else {
        double u = rng.Uniform();
        y = c_.classes() - 1;
        for (int k = 0; k < c_.classes(); ++k) {
          u -= mix[static_cast<size_t>(k)];
          if (u < 0) {
            y = k;
            break;
          }
        }
      }
      d.labels[static_cast<size_t>(i)] = y;
      const float* centre = centres_.data() + static_cast<size_t>(y) * f;
      float* x = d.mutable_example(i);
      for (int j = 0; j < f; ++j) x[j] = centre[j] + static_cast<float>(rng.Normal());
    }
    return d;
  }

  const v1::SyntheticData c_;
  std::vector<float> centres_;  // classes × features
  std::shared_ptr<const data::Dataset> test_;
};

// Shard s of `parts` takes its even share of group s mod groups (groups = group_lists.size()).
data::ClientIndices SplitGroups(data::ClientIndices group_lists, int parts) {
  const int groups = static_cast<int>(group_lists.size());
  if (groups == parts) return group_lists;
  data::ClientIndices shards(static_cast<size_t>(parts));
  for (int g = 0; g < groups; ++g) {
    const std::vector<int>& all = group_lists[static_cast<size_t>(g)];
    const int members = (parts - g + groups - 1) / groups;  // shards g, g + groups, ...
    for (int m = 0; m < members; ++m) {
      const size_t begin = all.size() * static_cast<size_t>(m) / static_cast<size_t>(members);
      const size_t end = all.size() * static_cast<size_t>(m + 1) / static_cast<size_t>(members);
      shards[static_cast<size_t>(g + m * groups)].assign(all.begin() + static_cast<long>(begin),
                                                         all.begin() + static_cast<long>(end));
    }
  }
  return shards;
}

absl::StatusOr<std::unique_ptr<ClientDataSource>> MakeFashionMnist(const v1::SimConfig& config) {
  const v1::FashionMnistData& f = config.data().fashion_mnist();
  // 8-bit storage (47 MB for the training split instead of 188): the batches and the
  // evaluation convert a batch at a time; standardization converts to floats.
  FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm,
                         data::LoadFashionMnist(f.dir(), data::IdxStorage::kU8));
  FEDGE_RETURN_IF_ERROR(data::Preprocess(config.job().preprocessing(), fm.train));
  FEDGE_RETURN_IF_ERROR(data::Preprocess(config.job().preprocessing(), fm.test));
  if (f.test_examples() > 0 && f.test_examples() < fm.test.num_examples) {
    std::vector<int> first(static_cast<size_t>(f.test_examples()));
    for (int i = 0; i < f.test_examples(); ++i) first[static_cast<size_t>(i)] = i;
    fm.test = data::Subset(fm.test, first);
  }
  const int parts = f.partitions();
  // NIID-Bench's Dirichlet partitioners redraw until every client holds min_size examples,
  // which never happens for thousands of clients of a few examples each. Above
  // kMaxDirichletGroups shards they run over groups instead, each group's examples then
  // split evenly among its shards (shard s in group s mod groups): shards of a group share
  // its label (or size) skew. The groups' min_size guarantees min_examples per shard.
  const int groups = std::min(parts, kMaxDirichletGroups);
  const int per_group = (parts + groups - 1) / groups;
  const data::SplitStream stream =
      f.numpy_stream() ? data::SplitStream::kNumpy : data::SplitStream::kFedge;
  data::ClientIndices shards;
  switch (f.partition_case()) {
    case v1::FashionMnistData::kDirichlet: {
      FEDGE_ASSIGN_OR_RETURN(shards, data::LabelDirichletFrom(stream, fm.train.labels,
                                                              fm.train.num_classes, groups,
                                                              f.dirichlet().alpha(), f.seed(),
                                                              per_group * f.min_examples()));
      shards = SplitGroups(std::move(shards), parts);
      break;
    }
    case v1::FashionMnistData::kKClasses: {
      FEDGE_ASSIGN_OR_RETURN(shards, data::KClassesPerClient(fm.train.labels, fm.train.num_classes,
                                                             parts, f.k_classes().k(), f.seed()));
      break;
    }
    case v1::FashionMnistData::kQuantitySkew: {
      FEDGE_ASSIGN_OR_RETURN(shards, data::QuantitySkew(fm.train.num_examples, groups,
                                                        f.quantity_skew().alpha(), f.seed(),
                                                        per_group * f.min_examples()));
      shards = SplitGroups(std::move(shards), parts);
      break;
    }
    default: {
      FEDGE_ASSIGN_OR_RETURN(shards,
                             data::IidFrom(stream, fm.train.num_examples, parts, f.seed()));
      break;
    }
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    if (shards[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Simulator: data.fashion_mnist: shard ", i, " of ", shards.size(),
          " is empty (k_classes with fewer shards than classes, or too many partitions)"));
    }
    if (f.max_examples_per_partition() > 0 &&
        static_cast<int>(shards[i].size()) > f.max_examples_per_partition()) {
      shards[i].resize(static_cast<size_t>(f.max_examples_per_partition()));
    }
    shards[i].shrink_to_fit();
  }
  data::ClientIndices client_tests;
  if (f.client_test_sets()) {
    // FedCG's paper split: the test split shuffled, one part per shard, each halved into
    // validation (unused) and test.
    std::vector<int> order = data::AllIndices(fm.test);
    base::Rng rng(f.seed(), 0x74657374);  // "test"
    rng.Shuffle(order);
    const size_t part = order.size() / static_cast<size_t>(parts);
    for (int s = 0; s < parts; ++s) {
      const auto begin = order.begin() + static_cast<long>(part * static_cast<size_t>(s));
      client_tests.emplace_back(begin + static_cast<long>(part / 2), begin + static_cast<long>(part));
    }
  }
  auto test = std::make_shared<const data::Dataset>(std::move(fm.test));
  auto source = std::make_unique<FashionMnistSource>(std::move(fm.train), std::move(test),
                                                     std::move(shards));
  source->SetClientTests(std::move(client_tests));
  return std::unique_ptr<ClientDataSource>(std::move(source));
}

// Text devices (SimData.brown): each partition's tokens, encoded once.
class BrownSource final : public ClientDataSource {
 public:
  BrownSource(std::vector<std::vector<int32_t>> tokens,
              std::shared_ptr<const std::vector<data::TextDocument>> test)
      : tokens_(std::move(tokens)), test_(std::move(test)) {}

  data::Dataset ClientData(int64_t) const override { return data::Dataset(); }
  int64_t NumExamples(int64_t client) const override {
    return static_cast<int64_t>(Partition(client).size());
  }
  std::shared_ptr<const data::Dataset> TestData() const override { return nullptr; }
  std::vector<int32_t> ClientTokens(int64_t client) const override { return Partition(client); }
  std::shared_ptr<const std::vector<data::TextDocument>> EvaluationText() const override {
    return test_;
  }

 private:
  const std::vector<int32_t>& Partition(int64_t client) const {
    return tokens_[static_cast<size_t>(client % static_cast<int64_t>(tokens_.size()))];
  }
  const std::vector<std::vector<int32_t>> tokens_;
  const std::shared_ptr<const std::vector<data::TextDocument>> test_;
};

absl::StatusOr<std::unique_ptr<ClientDataSource>> MakeBrown(const v1::SimConfig& config) {
  const v1::BrownData& b = config.data().brown();
  // The base's tokenizer, from the file the coordinator reads.
  FEDGE_ASSIGN_OR_RETURN(const std::string base_path,
                         server::ResolveDataPath(config.data_root(),
                                                 config.job().language_model().base_path(),
                                                 "language_model.base_path"));
  FEDGE_ASSIGN_OR_RETURN(v1::ModelProto file, model::LoadModel(base_path));
  if (file.tokenizer().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Simulator: ", base_path, " holds no tokenizer (not a language model)"));
  }
  FEDGE_ASSIGN_OR_RETURN(const data::BpeTokenizer tokenizer,
                         data::BpeTokenizer::Parse(file.tokenizer()));
  file = v1::ModelProto();  // the values are not needed here (Clear would keep their memory)
  const std::string dir = b.dir().empty() ? data::DefaultBrownDir() : b.dir();
  FEDGE_ASSIGN_OR_RETURN(const std::vector<data::BrownDocument> docs, data::LoadBrownCorpus(dir));
  const data::BrownSplit split = data::SplitBrown(docs);
  if (split.finetune.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Simulator: data.brown: ", dir, " holds no fiction document (ck..cr)"));
  }
  const std::vector<std::vector<data::TextDocument>> parts = data::PartitionBrown(
      split.finetune, b.partition() == v1::BrownData::PARTITION_BY_GENRE
                          ? data::BrownPartition::kByGenre
                          : data::BrownPartition::kByDocument);
  if (static_cast<int64_t>(parts.size()) > config.population()) {
    FEDGE_LOG(WARNING) << "Simulator: data.brown has " << parts.size()
                       << " partitions and the population " << config.population()
                       << ": only the first " << config.population() << " take part";
  }
  std::vector<std::vector<int32_t>> tokens;
  for (const std::vector<data::TextDocument>& part : parts) {
    tokens.push_back(data::EncodeDocuments(tokenizer, part));
  }
  auto test = std::make_shared<std::vector<data::TextDocument>>();
  for (const data::BrownDocument& d : split.finetune_test) test->push_back({d.id, d.text});
  return std::unique_ptr<ClientDataSource>(new BrownSource(std::move(tokens), std::move(test)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClientDataSource>> MakeClientDataSource(const v1::SimConfig& config) {
  std::unique_ptr<ClientDataSource> source;
  if (config.data().has_synthetic()) {
    source.reset(new SyntheticSource(config.data().synthetic()));
  } else if (config.data().has_fashion_mnist()) {
    FEDGE_ASSIGN_OR_RETURN(source, MakeFashionMnist(config));
  } else if (config.data().has_brown()) {
    FEDGE_ASSIGN_OR_RETURN(source, MakeBrown(config));
  } else {
    return absl::InvalidArgumentError("Simulator: data: a dataset is required");
  }
  return WithAttack(std::move(source), config.attack());
}

}  // namespace fedge::sim
