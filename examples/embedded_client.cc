// An app that embeds fedge's device library. It includes only <fedge/client.h> (no gRPC,
// protobuf or Abseil headers) and hands the library its own examples through a data-source
// callback; here synthetic 28×28 grey images in 10 classes (pixels in [0, 1]) stand in for
// what a camera app collects, so it joins the same jobs as fedge-client on Fashion-MNIST
// shards (architecture "mlp" or "cnn").
//
//   embedded_client --coordinator 127.0.0.1:50051 --token-file token --insecure
//                   [--state FILE] [--examples N] [--seed S]
// Runs until SIGINT/SIGTERM; prints one line per round.
#include <signal.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "fedge/client.h"

namespace {

std::atomic<bool> g_stop{false};
extern "C" void OnSignal(int) { g_stop.store(true); }

// The app's own data: n grey 28×28 images; class k lights a 7×7 patch at one of 10 places,
// over uniform noise. Pixels in [0, 1].
bool CollectExamples(int n, unsigned seed, fedge::LocalData* data, std::string* error) {
  if (n <= 0) {
    *error = "no examples collected yet";
    return false;
  }
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> noise(0.0f, 0.3f);
  std::uniform_int_distribution<int> label(0, 9);
  data->shape = {1, 28, 28};
  data->num_classes = 10;
  data->features.resize(static_cast<size_t>(n) * 784);
  data->labels.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int k = label(rng);
    data->labels[i] = k;
    const int top = (k / 5) * 14 + 3, left = (k % 5) * 5 + 1;
    float* image = data->features.data() + static_cast<size_t>(i) * 784;
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        const bool lit = y >= top && y < top + 7 && x >= left && x < left + 5;
        image[y * 28 + x] = (lit ? 0.7f : 0.0f) + noise(rng);
      }
    }
  }
  return true;
}

int Usage() {
  std::fprintf(stderr,
               "usage: embedded_client --coordinator HOST:PORT --token-file FILE "
               "(--insecure | --tls-ca PEM) [--state FILE] [--examples N] [--seed S]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  fedge::ClientConfig config;
  std::string token_file, ca_file;
  int examples = 200;
  unsigned seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--coordinator" && value(&v)) {
      config.coordinator = v;
    } else if (a == "--token-file" && value(&v)) {
      token_file = v;
    } else if (a == "--tls-ca" && value(&v)) {
      ca_file = v;
    } else if (a == "--insecure") {
      config.insecure = true;
    } else if (a == "--state" && value(&v)) {
      config.state_path = v;
    } else if (a == "--examples" && value(&v)) {
      examples = std::atoi(v.c_str());
    } else if (a == "--seed" && value(&v)) {
      seed = static_cast<unsigned>(std::strtoul(v.c_str(), nullptr, 10));
    } else {
      return Usage();
    }
  }
  if (config.coordinator.empty() || token_file.empty()) return Usage();
  auto read = [](const std::string& path, std::string* out) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    *out = s.str();
    return static_cast<bool>(in);
  };
  if (!read(token_file, &config.enrollment_token)) {
    std::fprintf(stderr, "embedded_client: cannot read %s\n", token_file.c_str());
    return 1;
  }
  while (!config.enrollment_token.empty() &&
         std::isspace(static_cast<unsigned char>(config.enrollment_token.back()))) {
    config.enrollment_token.pop_back();
  }
  if (!ca_file.empty() && !read(ca_file, &config.tls_root_ca_pem)) {
    std::fprintf(stderr, "embedded_client: cannot read %s\n", ca_file.c_str());
    return 1;
  }
  config.platform = "embedded-example";
  config.data_source = [examples, seed](fedge::LocalData* data, std::string* error) {
    return CollectExamples(examples, seed, data, error);
  };
  config.on_round = [](const fedge::RoundSummary& r) {
    std::printf("round %lld: %lld examples, train loss %.4f, %.2f s, %.1f kB down, %.1f kB up\n",
                static_cast<long long>(r.round), static_cast<long long>(r.num_examples),
                r.train_loss, r.seconds, r.bytes_down / 1e3, r.bytes_up / 1e3);
    std::fflush(stdout);
  };

  std::string error;
  std::unique_ptr<fedge::Client> client = fedge::Client::Create(config, &error);
  if (client == nullptr) {
    std::fprintf(stderr, "embedded_client: %s\n", error.c_str());
    return 1;
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  if (!client->Run(g_stop, &error)) {
    std::fprintf(stderr, "embedded_client: %s\n", error.c_str());
    return 1;
  }
  std::printf("embedded_client: stopped (client id %s)\n", client->client_id().c_str());
  return 0;
}
