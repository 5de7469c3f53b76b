// The device runtime: registers with the coordinator, long-polls for tasks, trains each one
// with client::TrainLocally on the device's local data and uploads the update, over gRPC.
// This header carries no gRPC types (the channel and stubs live in client_runtime.cc), so a
// device app can include it without gRPC's headers.
//
//   ClientRuntimeOptions o;
//   o.target = "coordinator.example:7070";
//   o.enrollment_token = token;              // from the deployer
//   o.tls_root_ca_pem = ReadFile("ca.pem");  // TLS by default; o.insecure only when asked
//   o.data = std::make_shared<const data::Dataset>(*data::ReadShard("client.shard"));
//   o.state_path = "/var/lib/fedge/client.state";
//   FEDGE_ASSIGN_OR_RETURN(auto runtime, ClientRuntime::Create(std::move(o)));
//   std::atomic<bool> stop{false};            // set from a SIGTERM handler
//   absl::Status s = runtime->Run(stop);
//
// The round itself is client/device_round.h's, the one fedge-sim runs too; this runtime is
// its link (client/device_link.h) over gRPC, with the retries, backoff and resumption below.
// What Run does:
//   Register (with the client id and device key of the state file, so a restarted device
//   keeps its id: the coordinator grants an old id only with its key; a new id and its key
//   are written back, mode 0600) → loop { FetchTask long-poll (wait_seconds);
//   on a task: receive header + chunks (model::PayloadAssembler), decode the parameters
//   into the header's model_spec, preprocess a copy of the local data once per distinct
//   Preprocessing, train (OptionsFromTask), encode Δ and upload it in chunks (header with
//   example count and metrics, data ≤ 1 MiB, trailer with CRC-32) }.
// Failures:
//   - coordinator unavailable (UNAVAILABLE, DEADLINE_EXCEEDED, ...): retry after a jittered
//     exponential backoff (0.5 s doubling to 30 s, ±50%), forever, until `stop`;
//   - UNAUTHENTICATED on a session call: the session is gone (e.g. the coordinator lost
//     it): register again with the same id (during an upload, then resend the update once);
//   - a task whose deadline passes during training is abandoned (nothing uploaded);
//   - an upload cut by a broken connection is retried from the start while the task's
//     deadline allows; ALREADY_EXISTS (the first attempt did arrive) counts as done;
//   - a task whose estimated training memory exceeds profile.memory_budget_bytes
//     (memory_budget.h; a FedCG task: its four networks, EstimateFedCgTaskMemory) is
//     refused before its model is downloaded;
//   - a bad task (undecodable payload, model that does not fit the data) is logged and
//     skipped, and not downloaded again when the coordinator offers it again; the
//     coordinator drops the client from that round at its deadline or liveness timeout.
//   - the deadline is compared with this device's clock (deadline_unix_ms): a device whose
//     clock runs ahead abandons early.
//   Run returns an error only for what retrying cannot fix: a wrong enrollment token
//   (UNAUTHENTICATED from Register), an impossible profile (INVALID_ARGUMENT), a state
//   file that cannot be written (FAILED_PRECONDITION).
// FedCG tasks (TaskHeader.fed_cg; proto/job.proto FedCgParams): the runtime keeps one
// client::FedCgClient per job, created at the job's first task with the seed
// training.shuffle_seed ^ Fnv1a(client id), so its private extractor E and discriminator D
// carry over from round to round. The shard's images are brought to FedCG's inputs once per
// job (client::FedCgInputs: resized to image_size, [−1, 1]); the device holds out
// fed_cg.eval_holdout_fraction of them (FedCgHoldOut, seeded the same way), or evaluates on
// `eval_data` when given and trains on the whole shard. On each task it first evaluates its E
// with the task's global C on the held-out examples (reported as
// ClientTrainMetrics.eval_accuracy / eval_examples), then trains (FedCgClient::TrainRound,
// round index = task round − 1) and uploads Δ of the C.* and G.* tensors only, through the
// same chunked (optionally int8-encoded, resumable) upload as other tasks. With a state_path,
// E and D are written after every training to "<state_path>.fedcg" (mode 0600, device_state.h,
// with the job id), and a restarted device continuing the same job loads them back (their
// Adam moments start afresh); a task of another job starts a new extractor and discriminator.
// Without a state_path they live in memory only.
// FedCG tasks skip the memory-budget estimate (their networks take well under 1 MB).
// Stopping: when `stop` becomes true, a long-poll in flight is cancelled, training in
// progress is abandoned, an upload in progress is finished; then Run returns OK. Leave is
// called only with leave_on_stop (the device may come back: it keeps its id).
//
// Thread safety: Run is called once, from one thread; stats() and client_id() may be
// called from any thread.
#ifndef FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_H_
#define FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/grpc/backoff.h"
#include "client/local_trainer.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"

namespace grpc::experimental {
class ClientInterceptorFactoryInterface;
}  // namespace grpc::experimental

namespace fedge::client {

class FedCgClient;  // client/fedcg_trainer.h

// One round as the device saw it (for logs and callbacks).
struct RoundReport {
  std::string job_id;
  int64_t round = 0;
  std::string task_id;
  int64_t num_examples = 0;
  double train_loss = 0;
  double train_accuracy = 0;
  int64_t steps = 0;
  double train_seconds = 0;  // TrainLocally
  double total_seconds = 0;  // task received → upload acknowledged
  int64_t bytes_down = 0;    // task payload
  int64_t bytes_up = 0;      // update payload
  int64_t peak_rss_bytes = 0;  // the process's peak resident set size so far
  // FedCG: the device's private E with the task's global C on its held-out examples.
  double eval_accuracy = 0;
  int64_t eval_examples = 0;   // 0 = not evaluated (not FedCG, or nothing held out)
};

struct ClientRuntimeOptions {
  // host:port of the coordinator's Coordinator service.
  std::string target;
  // The deployment's enrollment token (shared secret).
  std::string enrollment_token;

  // Channel security. TLS unless `insecure` (plaintext, for tests and loopback only).
  bool insecure = false;
  std::string tls_root_ca_pem;       // CA of the coordinator's certificate; empty = system roots
  std::string tls_cert_chain_pem;    // mutual TLS: the device's certificate chain ...
  std::string tls_private_key_pem;   // ... and its key (both or neither)
  std::string tls_server_name;       // overrides the name checked in the certificate

  // Profile sent to Register; num_examples is filled from the data.
  v1::DeviceProfile profile;

  // Local data with pixels in [0, 1] (a shard from data::ReadShard), or a callback that
  // produces it (called at Create and again before every task, so an app can hand over
  // fresh data; an error skips that task). One of the two is required.
  std::shared_ptr<const data::Dataset> data;
  std::function<absl::StatusOr<std::shared_ptr<const data::Dataset>>()> data_source;

  // Language-model tasks: the device's documents and its copy of the job's base model file
  // (a ModelProto with spec.transformer and its tokenizer, as lm_pretrain writes it; a task
  // whose model_spec is another base is refused). Both or neither; with them, `data` may be
  // omitted (a text-only device). The text is encoded with the base's tokenizer at Create
  // (documents joined by a blank line) and registered as that many examples (tokens); the
  // base is loaded for a job's first task and kept, with that job's adapters and format
  // (an int4 base without its fp32 weights), until another job's task.
  std::vector<data::TextDocument> text;
  std::string lm_base_path;
  // Language-model tasks: where bases fetched from the coordinator are kept, by digest
  // (client/base_cache.h). With it, a task whose base (TaskHeader.language_model.base_sha256)
  // is not this device's is not declined: the device downloads that base (FetchBaseModel,
  // resumable, checked against the digest before use; one base kept at a time), encodes
  // its text with the base's tokenizer, and asks for the task again. `text` then needs no
  // lm_base_path (it is registered as its byte count, an upper bound on its tokens, until a
  // base is in hand). Empty: bases are not fetched.
  std::string lm_base_cache_dir;
  // Largest base accepted for download, in bytes (checked against what the coordinator
  // announces, before anything is written); a task whose base is larger is declined.
  int64_t max_base_bytes = int64_t{1} << 30;

  // FedCG tasks only: the device's own test examples (pixels in [0, 1], like `data`), on
  // which it evaluates its private E with each task's global C; it then trains on all of
  // `data`. Null: it holds out fed_cg.eval_holdout_fraction of `data` instead.
  std::shared_ptr<const data::Dataset> eval_data;

  // File keeping the client id across restarts (device_state.h). Empty: not kept.
  std::string state_path;
  // The id this device asks for at its first registration (when the state file has none).
  // Granted only by a coordinator started with --accept-requested-client-ids (reproducible
  // experiments that name their devices, e.g. to compare a fleet with fedge-sim); others
  // assign a random id. Empty: none asked.
  std::string requested_client_id;

  // Long-poll length asked of FetchTask, in seconds (the server caps it).
  int fetch_wait_seconds = 20;
  BackoffOptions backoff;
  // Seeds the backoff jitter. Shuffling follows the task (LocalTraining.shuffle_seed).
  uint64_t seed = 0;
  // Call Leave when stopped (the coordinator then forgets the session).
  bool leave_on_stop = false;
  // Largest gRPC message accepted from the coordinator (chunks are ≤ 1 MiB).
  int max_receive_message_bytes = 8 << 20;
  // Largest task payload accepted, in bytes (a bound on memory; the exact size also
  // follows from the task's model_spec).
  int64_t max_task_bytes = int64_t{1} << 31;

  // Called after every uploaded update (from Run's thread).
  std::function<void(const RoundReport&)> on_round;

  // ---- for tests ----
  // Interceptors for the device's channel, made once at Create (e.g. to record every message
  // the device sends; grpcpp/support/client_interceptor.h).
  std::function<std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>()>
      interceptors;
  // Called on Run's thread after each FedCG training, with the device's FedCgClient (its
  // private E and D as they now are).
  std::function<void(FedCgClient&)> on_fedcg_trained;
  // A deliberately broken FedCG device: appends its extractor's parameters (E.*, their
  // values) to every update, so that tests can check the coordinator refuses it and that a
  // message inspection would see it. Never set outside tests.
  bool testing_fedcg_upload_extractor = false;
  // A hostile device, for measuring the coordinator's defences with real processes
  // (bench/hostile_client.cc, examples/fleet/run.sh HOSTILE_ATTACK): called with each
  // trained update before it is encoded and sent, it may rewrite Δ and the example count at
  // will, as a rooted device could; an error abandons the task. And the example count sent
  // at registration instead of the data's (0: the data's). Never set in a real device.
  std::function<absl::Status(const v1::ModelProto& task_model, LocalUpdate& update)>
      testing_rewrite_update;
  int64_t testing_claimed_examples = 0;
  // Seeds the distributed-DP noise share this device adds in secure-aggregation rounds
  // (client/device_round.h SendOptions.noise_seed), so that a test can compare a fleet with
  // fedge-sim bit for bit. Noise others can predict gives no privacy: never set outside tests.
  std::optional<uint64_t> testing_dp_noise_seed;
};

struct ClientRuntimeStats {
  int64_t rounds_completed = 0;   // updates uploaded and acknowledged
  int64_t tasks_abandoned = 0;    // deadline passed, stop, or a bad task
  int64_t registrations = 0;
  int64_t connection_failures = 0;  // failed calls, each retried after a backoff
  // Update payload bytes written to upload streams, resends included, and how many uploads
  // resumed after a broken connection (from the coordinator's UploadStatus count).
  int64_t upload_bytes_sent = 0;
  int64_t uploads_resumed = 0;
  // FedCG: jobs whose private E and D were restored from "<state_path>.fedcg".
  int64_t fedcg_states_restored = 0;
  // Language-model bases downloaded whole (FetchBaseModel, checked against their digest),
  // and the base bytes received, resumed downloads included.
  int64_t bases_fetched = 0;
  int64_t base_bytes_received = 0;
};

class ClientRuntime {
 public:
  // INVALID_ARGUMENT for missing target/token/data, half a client certificate, bad backoff
  // options; the state file is read here (PERMISSION_DENIED when others can read it).
  static absl::StatusOr<std::unique_ptr<ClientRuntime>> Create(ClientRuntimeOptions options);
  ~ClientRuntime();
  ClientRuntime(const ClientRuntime&) = delete;
  ClientRuntime& operator=(const ClientRuntime&) = delete;

  // Runs until `stop` is true (then OK) or a permanent error (see above).
  absl::Status Run(const std::atomic<bool>& stop);

  // The id the coordinator assigned ("" before the first Register).
  std::string client_id() const;
  ClientRuntimeStats stats() const;

 private:
  struct Impl;
  explicit ClientRuntime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_H_
