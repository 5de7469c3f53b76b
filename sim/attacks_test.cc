#include "sim/attacks.h"

#include <cmath>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "sim/sim_config.h"

namespace fedge::sim {
namespace {

v1::ModelProto Model(float w0, float w1) {
  v1::ModelProto m;
  v1::TensorProto* t = m.add_parameters();
  t->set_name("fc.weight");
  t->add_shape(2);
  t->add_values(w0);
  t->add_values(w1);
  return m;
}

client::LocalUpdate Update(float d0, float d1, int64_t n) {
  client::LocalUpdate u;
  u.delta = Model(d0, d1);
  u.num_examples = n;
  return u;
}

v1::AttackConfig Config(v1::AttackConfig::Kind kind, double scale = 0) {
  v1::AttackConfig a;
  a.set_kind(kind);
  a.add_clients(3);
  if (scale > 0) a.set_scale(scale);
  a.set_value(1e30);
  a.set_claimed_examples(60000);
  return a;
}

TEST(AttackTest, OnlyHostileClientsArePoisonedAndClaimTheirCount) {
  Attack attack(Config(v1::AttackConfig::ATTACK_KIND_SIGN_FLIP, 10));
  client::LocalUpdate honest = Update(1, 2, 100);
  ASSERT_TRUE(attack.Poison(2, Model(5, 5), honest).ok());
  EXPECT_EQ(honest.delta.parameters(0).values(0), 1);
  EXPECT_EQ(honest.num_examples, 100);
  EXPECT_EQ(attack.ClaimedExamples(2, 100), 100);
  EXPECT_EQ(attack.ClaimedExamples(3, 100), 60000);
  client::LocalUpdate hostile = Update(1, -2, 100);
  ASSERT_TRUE(attack.Poison(3, Model(5, 5), hostile).ok());
  EXPECT_EQ(hostile.delta.parameters(0).values(0), -10);
  EXPECT_EQ(hostile.delta.parameters(0).values(1), 20);
  EXPECT_EQ(hostile.num_examples, 60000);
  EXPECT_NEAR(hostile.delta_norm, std::sqrt(500.0), 1e-9);
}

TEST(AttackTest, ScaledNegativeModelAndConstantValues) {
  client::LocalUpdate u = Update(1, 2, 100);
  ASSERT_TRUE(Attack(Config(v1::AttackConfig::ATTACK_KIND_SCALED_NEGATIVE_MODEL, 1000))
                  .Poison(3, Model(0.5f, -1), u)
                  .ok());
  EXPECT_EQ(u.delta.parameters(0).values(0), -500);
  EXPECT_EQ(u.delta.parameters(0).values(1), 1000);
  client::LocalUpdate c = Update(1, 2, 100);
  ASSERT_TRUE(Attack(Config(v1::AttackConfig::ATTACK_KIND_CONSTANT)).Poison(3, Model(0, 0), c).ok());
  EXPECT_EQ(c.delta.parameters(0).values(1), 1e30f);
  // A Δ without its twin in the task's model is an error, not a silent pass.
  client::LocalUpdate bad = Update(1, 2, 100);
  bad.delta.mutable_parameters(0)->set_name("other");
  EXPECT_FALSE(Attack(Config(v1::AttackConfig::ATTACK_KIND_SCALED_NEGATIVE_MODEL, 2))
                   .Poison(3, Model(1, 1), bad)
                   .ok());
}

class FixedSource final : public ClientDataSource {
 public:
  data::Dataset ClientData(int64_t) const override {
    data::Dataset d;
    d.num_examples = 3;
    d.shape = {1};
    d.features = {0, 0, 0};
    d.labels = {0, 4, 9};
    d.num_classes = 10;
    return d;
  }
  int64_t NumExamples(int64_t) const override { return 3; }
  std::shared_ptr<const data::Dataset> TestData() const override { return nullptr; }
};

TEST(AttackTest, LabelFlipFlipsOnlyHostileClientsLabels) {
  auto source = WithAttack(std::make_unique<FixedSource>(),
                           Config(v1::AttackConfig::ATTACK_KIND_LABEL_FLIP));
  EXPECT_EQ(source->ClientData(3).labels, (std::vector<int32_t>{9, 5, 0}));
  EXPECT_EQ(source->ClientData(2).labels, (std::vector<int32_t>{0, 4, 9}));
}

TEST(AttackTest, ConfigIsValidatedWithDefaults) {
  v1::SimConfig c;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"pb(
    job {
      name: "j" architecture: "mlp" rounds: 1
      selection { clients_per_round: 2 } round_policy { quorum: 2 }
    }
    population: 4
    data { synthetic { features: 784 classes: 10 examples_per_client: 10 } }
    attack { kind: ATTACK_KIND_SIGN_FLIP clients: 1 }
  )pb", &c));
  absl::StatusOr<v1::SimConfig> v = ValidateSimConfig(c);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->attack().scale(), 10);
  c.mutable_attack()->add_clients(4);
  EXPECT_FALSE(ValidateSimConfig(c).ok());  // outside the population
  c.mutable_attack()->clear_clients();
  EXPECT_FALSE(ValidateSimConfig(c).ok());  // a kind needs clients
  c.mutable_attack()->add_clients(0);
  c.mutable_attack()->set_scale(std::nan(""));
  EXPECT_FALSE(ValidateSimConfig(c).ok());
}

}  // namespace
}  // namespace fedge::sim
