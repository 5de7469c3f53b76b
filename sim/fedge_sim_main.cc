// fedge-sim: simulate a federated job over N virtual clients in one process.
//
//   fedge-sim --config examples/sim_fleet.textproto --metrics-out out/sim/metrics.jsonl
//             --report out/sim/report [--threads 2]
//
// stdout: a line per round and a summary (peak RSS included). stderr: a progress bar with
// ETA when stderr is a terminal (--progress=always forces it, =never hides it).
// --metrics-out: one JSON object per round (sim/report.h). --report DIR: SVG plots and
// index.html. --nowall_time writes wall_time_s as 0, so that metrics files of runs with the
// same config compare byte for byte whatever the thread count.
//
// Under MPI (built in when CMake finds MPI; sim/simulator.h, "Over several processes"):
//   mpirun -np 2 fedge-sim --config ... --metrics-out ...
// rank 0 reads the config, broadcasts it, runs the coordinator and writes every output;
// the other ranks train their share of each round's clients and print nothing. --threads
// is per rank (default: the cores shared among the ranks on each machine). Without mpirun
// fedge-sim never initialises MPI.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/log.h"
#include "base/memory.h"
#include "base/status_macros.h"
#include "sim/cluster.h"
#include "sim/report.h"
#include "sim/sim_config.h"
#include "sim/simulator.h"
#ifdef FEDGE_SIM_HAVE_MPI
#include "sim/mpi_cluster.h"
#endif

ABSL_FLAG(std::string, config, "", "the simulation, a fedge.v1.SimConfig in text format");
ABSL_FLAG(std::string, metrics_out, "", "write one JSON object per round to this file");
ABSL_FLAG(std::string, report, "", "write SVG plots and index.html into this directory");
ABSL_FLAG(int, threads, 0, "training threads (0: the config's threads, else the cores)");
ABSL_FLAG(std::string, progress, "auto", "progress bar on stderr: auto (when a TTY), always, never");
ABSL_FLAG(bool, wall_time, true, "record wall_time_s in the metrics (false: 0, for diffs)");
ABSL_FLAG(bool, verbose, false, "log the coordinator's round messages");
ABSL_FLAG(std::string, replot, "",
          "instead of simulating, write --report DIR from this metrics file (--metrics-out)");

namespace fedge {
namespace {

// Peak resident set size of this process in MB (VmHWM), or -1.
double PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    long kb = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %ld kB", &kb) == 1) return kb / 1024.0;
  }
  return -1;
}

std::string Clock(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%02ld:%02ld", s / 60, s % 60);
}

// The job's model as the scenario line names it.
std::string ModelName(const v1::JobConfig& job) {
  if (job.has_language_model()) {
    const v1::LoraSpec& lora = job.language_model().lora();
    return absl::StrFormat("LoRA rank %d over %s (%s base)", lora.rank(),
                           job.language_model().base_path(),
                           lora.base_format() == v1::LoraSpec::BASE_FORMAT_INT4 ? "int4" : "fp32");
  }
  return job.architecture().empty() ? job.model_spec().name() : job.architecture();
}

// A round's headline figure: a language model's perplexity, else the accuracy.
std::string Score(const sim::RoundReport& r) {
  return r.test_perplexity > 0 ? absl::StrFormat("ppl %.2f", r.test_perplexity)
                               : absl::StrFormat("acc %.4f", r.test_accuracy);
}

void DrawProgress(const sim::RoundReport& r, int64_t rounds, double wall) {
  constexpr int kWidth = 30;
  const double f = rounds > 0 ? static_cast<double>(r.round) / static_cast<double>(rounds) : 1;
  const int filled = static_cast<int>(f * kWidth);
  const double eta = r.round > 0 ? wall / static_cast<double>(r.round) *
                                       static_cast<double>(rounds - r.round)
                                 : 0;
  std::fprintf(stderr, "\r[%s%s] %lld/%lld  %s  wall %s  ETA %s ",
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
               static_cast<long long>(r.round), static_cast<long long>(rounds), Score(r).c_str(),
               Clock(wall).c_str(), Clock(eta).c_str());
  std::fflush(stderr);
}

// --replot: the report of an earlier run, from its metrics file.
absl::Status Replot(const std::string& metrics_path, const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("--replot needs --report DIR");
  std::ifstream in(metrics_path);
  if (!in) return absl::NotFoundError("cannot read --replot " + metrics_path);
  std::vector<sim::RoundReport> rounds;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    absl::StatusOr<sim::RoundReport> r = sim::ParseMetricsJsonLine(line);
    if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat(metrics_path, ":", n, ": ", r.status().message()));
    rounds.push_back(*r);
  }
  sim::ReportSummary summary;
  summary.title = metrics_path;
  summary.config = "replotted from " + metrics_path;
  summary.wall_seconds = rounds.empty() ? 0 : rounds.back().wall_time_s;
  FEDGE_RETURN_IF_ERROR(sim::WriteReport(dir, rounds, summary));
  std::printf("report: %s/index.html\n", dir.c_str());
  return absl::OkStatus();
}

// A rank other than 0: the config from rank 0 (empty: rank 0 failed before starting), then
// its share of the training.
absl::Status RunWorker(sim::Cluster& cluster) {
  std::string bytes;
  FEDGE_RETURN_IF_ERROR(cluster.Broadcast(bytes));
  if (bytes.empty()) return absl::OkStatus();
  v1::SimConfig config;
  if (!config.ParseFromString(bytes)) {
    return absl::InternalError("a malformed config from rank 0");
  }
  base::SetMinLogLevel(base::LogLevel::WARNING);
  sim::SimulatorOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.cluster = &cluster;
  return sim::RunTrainingWorker(config, options);
}

// Rank 0: hands `config` to the other ranks, or tells them to stop when it is null.
absl::Status ShareConfig(sim::Cluster* cluster, const v1::SimConfig* config) {
  if (cluster == nullptr) return absl::OkStatus();
  std::string bytes = config != nullptr ? config->SerializeAsString() : std::string();
  return cluster->Broadcast(bytes);
}

// `started` turns true once other ranks train for this one: an error after that must end
// them too (main).
absl::Status Run(sim::Cluster* cluster, bool& started) {
  if (cluster != nullptr && cluster->rank() != 0) return RunWorker(*cluster);
  if (const std::string replot = absl::GetFlag(FLAGS_replot); !replot.empty()) {
    FEDGE_RETURN_IF_ERROR(ShareConfig(cluster, nullptr));
    return Replot(replot, absl::GetFlag(FLAGS_report));
  }
  // Everything that can fail before the other ranks start, so they can stop cleanly.
  std::ofstream metrics;
  bool progress = false;
  absl::StatusOr<v1::SimConfig> loaded = [&]() -> absl::StatusOr<v1::SimConfig> {
    const std::string path = absl::GetFlag(FLAGS_config);
    if (path.empty()) return absl::InvalidArgumentError("--config is required");
    const std::string progress_flag = absl::GetFlag(FLAGS_progress);
    if (progress_flag != "auto" && progress_flag != "always" && progress_flag != "never") {
      return absl::InvalidArgumentError("--progress must be auto, always or never");
    }
    progress = progress_flag == "always" || (progress_flag == "auto" && isatty(STDERR_FILENO));
    FEDGE_ASSIGN_OR_RETURN(v1::SimConfig config, sim::LoadSimConfigFile(path));
    if (config.data_root().empty()) {
      // The job's files (a language model's base) are read next to the config.
      std::error_code ec;
      const std::filesystem::path dir =
          std::filesystem::absolute(std::filesystem::path(path), ec).parent_path();
      config.set_data_root(ec ? "." : dir.string());
    }
    if (const std::string out = absl::GetFlag(FLAGS_metrics_out); !out.empty()) {
      metrics.open(out, std::ios::trunc);
      if (!metrics) return absl::UnavailableError("cannot write --metrics-out " + out);
    }
    return config;
  }();
  FEDGE_RETURN_IF_ERROR(ShareConfig(cluster, loaded.ok() ? &*loaded : nullptr));
  if (!loaded.ok()) return loaded.status();
  started = cluster != nullptr;
  const v1::SimConfig& config = *loaded;
  if (!absl::GetFlag(FLAGS_verbose)) base::SetMinLogLevel(base::LogLevel::WARNING);

  const auto t0 = std::chrono::steady_clock::now();
  auto wall = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  sim::SimulatorOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.cluster = cluster;
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<sim::Simulator> simulator,
                         sim::Simulator::Create(config, options));
  const double setup_s = wall();
  const v1::JobConfig& job = config.job();
  const std::string scenario = absl::StrFormat(
      "%s: %d clients registered, %s per round, %s, %d rounds, %d local epoch(s), seed %d, "
      "%d thread(s)%s",
      job.name(), config.population(),
      job.selection().has_fraction() ? absl::StrCat(job.selection().fraction() * 100, "%")
                                     : absl::StrCat(job.selection().clients_per_round()),
      ModelName(job), job.rounds(),
      job.local_training().epochs(), config.seed(), simulator->threads(),
      simulator->ranks() > 1 ? absl::StrFormat(" per rank, %d MPI ranks", simulator->ranks())
                             : "");
  std::printf("fedge-sim %s (setup %.1f s, peak RSS %.0f MB)\n", scenario.c_str(), setup_s,
              PeakRssMb());
  std::fflush(stdout);

  std::vector<sim::RoundReport> rounds;
  const bool wall_time = absl::GetFlag(FLAGS_wall_time);
  const double run_start = wall();
  FEDGE_RETURN_IF_ERROR(simulator->Run([&](const sim::RoundReport& r) {
    rounds.push_back(r);
    if (metrics.is_open()) {
      metrics << sim::MetricsJsonLine(r, wall_time) << "\n";
      metrics.flush();
    }
    if (progress) std::fprintf(stderr, "\r\033[K");
    std::printf("round %3lld  %s  loss %.4f  clients %d/%d (offline %d, dropouts %d, "
                "stragglers %d)  virtual %.1f s  wall %.1f s\n",
                static_cast<long long>(r.round), Score(r).c_str(), r.test_loss, r.participants,
                r.sampled, r.offline, r.dropouts, r.stragglers, r.virtual_time_s, r.wall_time_s);
    if (r.fed_cg) {
      // acc above is the mean client accuracy (private E_i + the new global C).
      std::printf("          FedCG: mean client accuracy %.4f (devices' reports, previous "
                  "round's model: %.4f)  distill KL %.4f -> %.4f  synthetic acc %.4f\n",
                  r.test_accuracy, r.fedcg_reported_accuracy, r.fedcg_first_kl, r.fedcg_last_kl,
                  r.fedcg_synthetic_accuracy);
    }
    std::fflush(stdout);
    if (progress) DrawProgress(r, simulator->rounds(), wall() - run_start);
  }));
  if (progress) std::fprintf(stderr, "\n");
  const double run_s = wall() - run_start;
  int64_t updates = 0;
  for (const sim::RoundReport& r : rounds) updates += r.participants;
  const sim::RoundReport last = rounds.empty() ? sim::RoundReport{} : rounds.back();
  std::printf("summary: %zu rounds, final test %s, virtual time %.1f s, wall %.1f s "
              "(setup %.1f s), %lld client updates (%.1f per second), peak RSS %.0f MB\n",
              rounds.size(),
              last.test_perplexity > 0
                  ? absl::StrFormat("perplexity %.2f", last.test_perplexity).c_str()
                  : absl::StrFormat("accuracy %.4f", last.test_accuracy).c_str(),
              last.virtual_time_s, run_s, setup_s,
              static_cast<long long>(updates), run_s > 0 ? updates / run_s : 0.0, PeakRssMb());
  if (const std::string dir = absl::GetFlag(FLAGS_report); !dir.empty()) {
    sim::ReportSummary summary;
    summary.title = job.name();
    summary.config = scenario;
    summary.threads = simulator->threads();
    summary.wall_seconds = run_s;
    FEDGE_RETURN_IF_ERROR(sim::WriteReport(dir, rounds, summary));
    std::printf("report: %s/index.html\n", dir.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "fedge-sim --config sim.textproto [--metrics-out FILE] [--report DIR] [--threads T]\n"
      "  under MPI: mpirun -np P fedge-sim ...");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  fedge::base::KeepFreedMemoryForReuse();
  std::unique_ptr<fedge::sim::Cluster> cluster;
#ifdef FEDGE_SIM_HAVE_MPI
  if (fedge::sim::LaunchedByMpirun()) {
    absl::StatusOr<std::unique_ptr<fedge::sim::MpiCluster>> mpi = fedge::sim::MpiCluster::Create();
    if (!mpi.ok()) {
      std::fprintf(stderr, "fedge-sim: %s\n", mpi.status().ToString().c_str());
      return 1;
    }
    cluster = *std::move(mpi);
  }
#else
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE"); size != nullptr && std::atoi(size) > 1) {
    std::fprintf(stderr, "fedge-sim: started by mpirun, but built without MPI (install "
                         "libopenmpi-dev and configure again)\n");
    return 1;
  }
#endif
  bool started = false;
  const absl::Status status = fedge::Run(cluster.get(), started);
  if (!status.ok()) {
    if (cluster != nullptr && cluster->rank() != 0) {
      std::fprintf(stderr, "fedge-sim rank %d: %s\n", cluster->rank(), status.ToString().c_str());
      cluster->Abort(1);
    }
    std::fprintf(stderr, "fedge-sim: %s\n", status.ToString().c_str());
    if (started) cluster->Abort(1);
    return 1;
  }
  return 0;
}
