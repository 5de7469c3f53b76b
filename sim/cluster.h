// The processes one fedge-sim run is spread over (scale-out). Rank 0 runs the
// coordinator and the round logic (sim/simulator.h); ranks 1..size-1 train their share of
// each round's clients (RunTrainingWorker) and send the updates back. sim/mpi_cluster.h
// implements it over MPI; the simulator itself never includes an MPI header.
//
// Messages are byte strings between two ranks; messages from one rank to another arrive in
// the order they were sent. Every method is called from one thread (the one that created
// the cluster); training threads never call it.
#ifndef FEDGE_SIM_CLUSTER_H_
#define FEDGE_SIM_CLUSTER_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedge::sim {

class Cluster {
 public:
  virtual ~Cluster() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Ranks on this machine (this one included): the cores are shared among them.
  virtual int local_size() const = 0;

  // Blocks until `bytes` is on its way to rank `to` (the receiver need not have taken it).
  // Waiting sleeps rather than spins: ranks share cores with training threads.
  virtual absl::Status Send(int to, std::string_view bytes) = 0;
  // Blocks until the next message from rank `from` arrives; sleeps while waiting.
  virtual absl::StatusOr<std::string> Receive(int from) = 0;
  // Rank 0's `bytes` to every rank: on rank 0 sends them, elsewhere replaces them.
  virtual absl::Status Broadcast(std::string& bytes) = 0;
  // Ends every rank with `code` (after an error that leaves other ranks waiting).
  [[noreturn]] virtual void Abort(int code) = 0;
};

}  // namespace fedge::sim

#endif  // FEDGE_SIM_CLUSTER_H_
