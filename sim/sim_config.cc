#include "sim/sim_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "model/sequential.h"
#include "server/config_text.h"
#include "server/job_config.h"

namespace fedge::sim {
namespace {

inline constexpr size_t kMaxSimConfigTextBytes = 1 << 20;


// "field problem" lines, so that one pass reports every bad field.
class Problems : public server::ConfigProblems {
 public:
  Problems() : server::ConfigProblems("SimConfig: invalid config") {}
};

// Fills `d` with `constant` when unset; checks that every value it can produce lies in
// [lo, hi] (hi may be infinite) and, with positive = true, is > lo.
void CheckDistribution(v1::Distribution& d, const std::string& field, double default_value,
                       double lo, double hi, bool positive, Problems& p) {
  auto in_range = [&](double v) {
    return std::isfinite(v) && v >= lo && v <= hi && (!positive || v > lo);
  };
  const std::string range = absl::StrCat(positive ? "(" : "[", lo, ", ", hi, "]");
  switch (d.kind_case()) {
    case v1::Distribution::KIND_NOT_SET:
      d.set_constant(default_value);
      break;
    case v1::Distribution::kConstant:
      if (!in_range(d.constant())) {
        p.Add(field + ".constant", absl::StrCat("must be in ", range, ", got ", d.constant()));
      }
      break;
    case v1::Distribution::kLognormal: {
      const v1::LogNormalDistribution& l = d.lognormal();
      if (!std::isfinite(l.median()) || l.median() <= 0) {
        p.Add(field + ".lognormal.median", absl::StrCat("must be > 0, got ", l.median()));
      }
      if (!std::isfinite(l.sigma()) || l.sigma() < 0) {
        p.Add(field + ".lognormal.sigma", absl::StrCat("must be >= 0, got ", l.sigma()));
      }
      // Draws are clamped into the field's range (sim/device_model.h), so only a median
      // outside it is an error.
      if (std::isfinite(l.median()) && l.median() > 0 && !in_range(l.median())) {
        p.Add(field + ".lognormal.median", absl::StrCat("must be in ", range, ", got ", l.median()));
      }
      break;
    }
    case v1::Distribution::kUniform: {
      const v1::UniformDistribution& u = d.uniform();
      if (!in_range(u.min())) {
        p.Add(field + ".uniform.min", absl::StrCat("must be in ", range, ", got ", u.min()));
      }
      if (!in_range(u.max())) {
        p.Add(field + ".uniform.max", absl::StrCat("must be in ", range, ", got ", u.max()));
      }
      if (u.min() > u.max()) {
        p.Add(field + ".uniform", absl::StrCat("min (", u.min(), ") exceeds max (", u.max(), ")"));
      }
      break;
    }
    case v1::Distribution::kChoices: {
      const v1::DiscreteDistribution& c = d.choices();
      if (c.values().empty()) p.Add(field + ".choices.values", "must not be empty");
      for (int i = 0; i < c.values_size(); ++i) {
        if (!in_range(c.values(i))) {
          p.Add(absl::StrCat(field, ".choices.values[", i, "]"),
                absl::StrCat("must be in ", range, ", got ", c.values(i)));
        }
      }
      if (!c.weights().empty()) {
        if (c.weights_size() != c.values_size()) {
          p.Add(field + ".choices.weights",
                absl::StrCat("has ", c.weights_size(), " entries for ", c.values_size(), " values"));
        }
        double sum = 0;
        for (int i = 0; i < c.weights_size(); ++i) {
          if (!std::isfinite(c.weights(i)) || c.weights(i) < 0) {
            p.Add(absl::StrCat(field, ".choices.weights[", i, "]"),
                  absl::StrCat("must be >= 0, got ", c.weights(i)));
          } else {
            sum += c.weights(i);
          }
        }
        if (!(sum > 0)) p.Add(field + ".choices.weights", "must have a positive sum");
      }
      break;
    }
  }
}

// True when `d` can produce a value below `v`.
bool CanBeBelow(const v1::Distribution& d, double v) {
  switch (d.kind_case()) {
    case v1::Distribution::kConstant:
      return d.constant() < v;
    case v1::Distribution::kUniform:
      return d.uniform().min() < v;
    case v1::Distribution::kChoices:
      return std::any_of(d.choices().values().begin(), d.choices().values().end(),
                         [v](double x) { return x < v; });
    default:
      return true;
  }
}

void CheckData(v1::SimConfig& c, Problems& p) {
  v1::SimData& data = *c.mutable_data();
  switch (data.source_case()) {
    case v1::SimData::SOURCE_NOT_SET:
      p.Add("data", "a dataset is required (fashion_mnist, synthetic or brown)");
      return;
    case v1::SimData::kBrown:
      if (!c.job().has_language_model()) {
        p.Add("data.brown", "is text: the job must be a language model (job.language_model)");
      }
      return;
    case v1::SimData::kFashionMnist: {
      v1::FashionMnistData& f = *data.mutable_fashion_mnist();
      if (f.dir().empty()) f.set_dir("/usr/share/datasets/fashion-mnist");
      p.IntRange("data.fashion_mnist.partitions", f.partitions(), 0, kMaxFashionMnistPartitions);
      if (f.partitions() == 0 && c.population() > 0) {
        f.set_partitions(static_cast<int32_t>(
            std::min<int64_t>(c.population(), kMaxFashionMnistPartitions)));
      }
      if (f.partitions() > c.population() && c.population() > 0) {
        p.Add("data.fashion_mnist.partitions",
              absl::StrCat("(", f.partitions(), ") exceeds population (", c.population(), ")"));
      }
      if (!f.has_min_examples() && f.partitions() > 0) {
        // NIID-Bench's 10 for up to 100 shards; beyond, the partitioners run over 100 groups
        // (sim/client_data.h) whose min size is shards per group × this.
        f.set_min_examples(f.partitions() <= 100 ? 10 : 2);
      }
      if (f.has_min_examples() && f.partitions() > 0) {
        p.IntRange("data.fashion_mnist.min_examples", f.min_examples(), 1,
                   kFashionMnistTrainExamples / f.partitions());
      }
      p.IntRange("data.fashion_mnist.test_examples", f.test_examples(), 0, 10000);
      p.IntRange("data.fashion_mnist.max_examples_per_partition", f.max_examples_per_partition(),
                 0, kFashionMnistTrainExamples);
      if (f.client_test_sets() && f.partitions() > 0) {
        const int test = f.test_examples() > 0 ? f.test_examples() : 10000;
        if (test / f.partitions() < 2) {
          p.Add("data.fashion_mnist.client_test_sets",
                absl::StrCat("needs at least 2 test examples per partition; ", test,
                             " test examples for ", f.partitions(), " partitions"));
        }
      }
      if (f.numpy_stream()) {
        if (f.partition_case() == v1::FashionMnistData::kKClasses ||
            f.partition_case() == v1::FashionMnistData::kQuantitySkew) {
          p.Add("data.fashion_mnist.numpy_stream",
                "reproduces NIID-Bench's iid and dirichlet splits only");
        }
        if (f.seed() > 0xffffffffULL) {
          p.Add("data.fashion_mnist.seed",
                absl::StrCat("(", f.seed(), ") must be below 2^32 with numpy_stream, as numpy's"));
        }
      }
      switch (f.partition_case()) {
        case v1::FashionMnistData::PARTITION_NOT_SET:
          f.mutable_iid();
          break;
        case v1::FashionMnistData::kDirichlet:
          p.Positive("data.fashion_mnist.dirichlet.alpha", f.dirichlet().alpha());
          break;
        case v1::FashionMnistData::kQuantitySkew:
          p.Positive("data.fashion_mnist.quantity_skew.alpha", f.quantity_skew().alpha());
          break;
        case v1::FashionMnistData::kKClasses:
          p.IntRange("data.fashion_mnist.k_classes.k", f.k_classes().k(), 1, 10);
          break;
        default:
          break;
      }
      return;
    }
    case v1::SimData::kSynthetic: {
      v1::SyntheticData& s = *data.mutable_synthetic();
      p.IntRange("data.synthetic.features", s.features(), 1, 100000);
      p.IntRange("data.synthetic.classes", s.classes(), 2, 1000);
      p.IntRange("data.synthetic.examples_per_client", s.examples_per_client(), 1, 1000000);
      if (!std::isfinite(s.label_alpha()) || s.label_alpha() < 0) {
        p.Add("data.synthetic.label_alpha", absl::StrCat("must be >= 0, got ", s.label_alpha()));
      }
      if (!s.has_separation()) s.set_separation(3.0);
      p.Positive("data.synthetic.separation", s.separation());
      if (!s.has_test_examples()) s.set_test_examples(2000);
      p.IntRange("data.synthetic.test_examples", s.test_examples(), 1, 1000000);
      return;
    }
  }
}

}  // namespace

absl::StatusOr<v1::SimConfig> ParseSimConfig(absl::string_view text, absl::string_view source) {
  if (text.size() > kMaxSimConfigTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("SimConfig: ", source, " has ", text.size(),
                                                   " bytes, more than the limit of ",
                                                   kMaxSimConfigTextBytes));
  }
  v1::SimConfig config;
  FEDGE_RETURN_IF_ERROR(server::ParseTextProto(text, source, "SimConfig", &config));
  return config;
}

// SimConfig.attack: hostile clients in range, factors finite; defaults filled in.
void CheckAttack(v1::SimConfig& c, Problems& p) {
  v1::AttackConfig& a = *c.mutable_attack();
  if (a.kind() == v1::AttackConfig::ATTACK_KIND_UNSPECIFIED) {
    if (a.clients_size() > 0) p.Add("attack.kind", "is required with attack.clients");
    return;
  }
  if (a.clients_size() == 0 || a.clients_size() > 1000) {
    p.Add("attack.clients", "must name 1 to 1000 hostile clients");
  }
  for (int64_t i : a.clients()) {
    if (i < 0 || i >= c.population()) {
      p.Add("attack.clients", absl::StrCat("client ", i, " is outside [0, population)"));
      break;
    }
  }
  if (!a.has_scale()) {
    a.set_scale(a.kind() == v1::AttackConfig::ATTACK_KIND_SIGN_FLIP ? 10 : 1000);
  }
  if (!a.has_value()) a.set_value(1e30);
  if (!(a.scale() > 0) || !std::isfinite(a.scale())) p.Add("attack.scale", "must be > 0 and finite");
  if (!std::isfinite(a.value()) || std::abs(a.value()) > 3e38) {
    p.Add("attack.value", "must be a finite float");
  }
  p.IntRange("attack.claimed_examples", a.claimed_examples(), 0, int64_t{1} << 30);
}

absl::StatusOr<v1::SimConfig> ValidateSimConfig(const v1::SimConfig& config) {
  v1::SimConfig c = config;
  Problems p;
  p.IntRange("population", c.population(), 1, kMaxPopulation);
  p.IntRange("threads", c.threads(), 0, 1024);
  if (!c.has_job()) {
    p.Add("job", "is required (a fedge.v1.JobConfig)");
  } else {
    absl::StatusOr<v1::JobConfig> job = server::ValidateJobConfig(c.job());
    if (!job.ok()) {
      p.Add("job:", std::string(job.status().message()));
    } else {
      *c.mutable_job() = *std::move(job);
      const v1::ClientSelection& sel = c.job().selection();
      if (sel.has_clients_per_round() && sel.clients_per_round() > c.population() &&
          c.population() > 0) {
        p.Add("job.selection.clients_per_round",
              absl::StrCat("(", sel.clients_per_round(), ") exceeds population (",
                           c.population(), ")"));
      }
      if (c.job().round_policy().quorum() > c.population() && c.population() > 0) {
        p.Add("job.round_policy.quorum", absl::StrCat("(", c.job().round_policy().quorum(),
                                                      ") exceeds population (", c.population(), ")"));
      }
    }
  }
  CheckData(c, p);
  const double inf = std::numeric_limits<double>::infinity();
  v1::DeviceProfiles& d = *c.mutable_devices();
  CheckDistribution(*d.mutable_compute_speed(), "devices.compute_speed", 1000, 0, inf, true, p);
  CheckDistribution(*d.mutable_memory_budget_mb(), "devices.memory_budget_mb", 0, 0, 1e9, false, p);
  CheckDistribution(*d.mutable_availability(), "devices.availability", 1, 0, 1, false, p);
  CheckDistribution(*d.mutable_dropout(), "devices.dropout", 0, 0, 1, false, p);
  v1::LinkProfiles& l = *c.mutable_links();
  CheckDistribution(*l.mutable_bandwidth_down_mbps(), "links.bandwidth_down_mbps", 20, 0, inf,
                    true, p);
  CheckDistribution(*l.mutable_bandwidth_up_mbps(), "links.bandwidth_up_mbps", 5, 0, inf, true, p);
  CheckDistribution(*l.mutable_latency_ms(), "links.latency_ms", 50, 0, inf, false, p);

  CheckAttack(c, p);

  // Without a deadline the coordinator waits for every sampled client, so a client that
  // never answers would hold the round until its liveness timeout.
  if (c.has_job() && c.job().round_policy().deadline_seconds() == 0 &&
      (CanBeBelow(d.availability(), 1) || !(d.dropout().kind_case() == v1::Distribution::kConstant &&
                                            d.dropout().constant() == 0))) {
    p.Add("job.round_policy.deadline_seconds",
          "must be > 0 when devices can be offline or drop out (devices.availability < 1 or "
          "devices.dropout > 0): without a deadline a round waits for every sampled client");
  }

  if (c.job().has_language_model() && !c.data().has_brown()) {
    p.Add("data", "must be brown with job.language_model (a language model trains on text)");
  }
  if (c.job().has_language_model()) {
    // The model is the base file's, built when the job starts.
    if (!p.empty()) return p.ToStatus();
    return c;
  }
  if (p.empty() && c.job().strategy().has_fed_cg()) {
    // FedCG: images for its networks (model_spec names the shape only).
    const v1::FedCgParams& f = c.job().strategy().fed_cg();
    if (!c.data().has_fashion_mnist()) {
      p.Add("data", "must be fashion_mnist with job.strategy.fed_cg (FedCG's networks take "
                    "images; synthetic data has none)");
    } else if (f.channels() != 1 || f.num_classes() != 10) {
      p.Add("job.strategy.fed_cg", absl::StrCat("has ", f.channels(), " channel(s) and ",
                                                f.num_classes(), " classes; Fashion-MNIST has "
                                                "1 and 10"));
    }
    if (!p.empty()) return p.ToStatus();
    return c;
  }
  // The model must fit the data.
  if (p.empty()) {
    absl::StatusOr<std::unique_ptr<model::Sequential>> net =
        model::Sequential::Create(c.job().model_spec());
    if (!net.ok()) return net.status();
    int features = 784, classes = 10;
    if (c.data().has_synthetic()) {
      features = c.data().synthetic().features();
      classes = c.data().synthetic().classes();
    }
    if ((*net)->input_size() != features || (*net)->output_size() != classes) {
      p.Add("job.model_spec", absl::StrCat("takes ", (*net)->input_size(), " inputs and gives ",
                                           (*net)->output_size(), " outputs; the data has ",
                                           features, " features and ", classes, " classes"));
    }
  }
  if (!p.empty()) return p.ToStatus();
  return c;
}

absl::StatusOr<v1::SimConfig> LoadSimConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("SimConfig: cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(text.str(), path);
  if (!parsed.ok()) return parsed.status();
  return ValidateSimConfig(*parsed);
}

}  // namespace fedge::sim
