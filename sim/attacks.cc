#include "sim/attacks.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedge::sim {
namespace {

const v1::TensorProto* FindTensor(const v1::ModelProto& model, const std::string& name) {
  for (const v1::TensorProto& t : model.parameters()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

// Flips the hostile clients' labels; everything else as the wrapped source.
class LabelFlippingSource final : public ClientDataSource {
 public:
  LabelFlippingSource(std::unique_ptr<ClientDataSource> inner, const v1::AttackConfig& config)
      : inner_(std::move(inner)), hostile_(config.clients().begin(), config.clients().end()) {}

  data::Dataset ClientData(int64_t client) const override {
    data::Dataset d = inner_->ClientData(client);
    if (hostile_.contains(client)) {
      data::FlipLabels(d);
    }
    return d;
  }
  int64_t NumExamples(int64_t client) const override { return inner_->NumExamples(client); }
  std::shared_ptr<const data::Dataset> TestData() const override { return inner_->TestData(); }
  std::vector<int32_t> ClientTokens(int64_t client) const override {
    return inner_->ClientTokens(client);
  }
  std::shared_ptr<const std::vector<data::TextDocument>> EvaluationText() const override {
    return inner_->EvaluationText();
  }
  data::Dataset ClientTestData(int64_t client) const override {
    return inner_->ClientTestData(client);
  }

 private:
  std::unique_ptr<ClientDataSource> inner_;
  absl::flat_hash_set<int64_t> hostile_;
};

}  // namespace

Attack::Attack(const v1::AttackConfig& config) : config_(config) {
  if (config.kind() != v1::AttackConfig::ATTACK_KIND_UNSPECIFIED) {
    hostile_.insert(config.clients().begin(), config.clients().end());
  }
}

int64_t Attack::ClaimedExamples(int64_t client, int64_t true_count) const {
  return hostile(client) && config_.claimed_examples() > 0 ? config_.claimed_examples()
                                                           : true_count;
}

absl::Status Attack::Poison(int64_t client, const v1::ModelProto& task_model,
                            client::LocalUpdate& update) const {
  if (!hostile(client)) return absl::OkStatus();
  update.num_examples = ClaimedExamples(client, update.num_examples);
  const float scale = static_cast<float>(config_.scale());
  double squares = 0;
  for (v1::TensorProto& t : *update.delta.mutable_parameters()) {
    switch (config_.kind()) {
      case v1::AttackConfig::ATTACK_KIND_SCALED_NEGATIVE_MODEL: {
        const v1::TensorProto* w = FindTensor(task_model, t.name());
        if (w == nullptr || w->values_size() != t.values_size()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Attack: client ", client, ": update tensor ", t.name(), " has no twin in the task's model"));
        }
        for (int i = 0; i < t.values_size(); ++i) t.set_values(i, -scale * w->values(i));
        break;
      }
      case v1::AttackConfig::ATTACK_KIND_CONSTANT:
        for (int i = 0; i < t.values_size(); ++i) t.set_values(i, static_cast<float>(config_.value()));
        break;
      case v1::AttackConfig::ATTACK_KIND_SIGN_FLIP:
        for (int i = 0; i < t.values_size(); ++i) t.set_values(i, -scale * t.values(i));
        break;
      default:  // LABEL_FLIP poisons the data, not the update
        break;
    }
    for (float v : t.values()) squares += double{v} * v;
  }
  update.delta_norm = std::sqrt(squares);
  return absl::OkStatus();
}

std::unique_ptr<ClientDataSource> WithAttack(std::unique_ptr<ClientDataSource> source,
                                             const v1::AttackConfig& config) {
  if (config.kind() != v1::AttackConfig::ATTACK_KIND_LABEL_FLIP) return source;
  return std::make_unique<LabelFlippingSource>(std::move(source), config);
}

}  // namespace fedge::sim
