// sim::Cluster over MPI (Debian's OpenMPI; the C API, MPI_COMM_WORLD): fedge-sim under
// `mpirun -np P` (scale-out). Built into fedge-sim only when CMake finds MPI.
//
//   if (sim::LaunchedByMpirun()) {
//     FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<sim::MpiCluster> cluster, sim::MpiCluster::Create());
//     ...   // MPI_Finalize when `cluster` is destroyed
//   }
//
// MPI is initialised with MPI_THREAD_FUNNELED: only the creating thread calls MPI. Waiting
// (Send, Receive) polls with MPI_Test/MPI_Iprobe and sleeps 100 µs between polls instead of
// OpenMPI's busy wait, which would take a core from this rank's training threads. Messages
// are limited to INT_MAX bytes (MPI counts are int).
#ifndef FEDGE_SIM_MPI_CLUSTER_H_
#define FEDGE_SIM_MPI_CLUSTER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sim/cluster.h"

namespace fedge::sim {

// True when this process was started by mpirun/mpiexec (OpenMPI's or a PMI launcher's
// environment), so that a plain `fedge-sim` never initialises MPI.
bool LaunchedByMpirun();

class MpiCluster final : public Cluster {
 public:
  // MPI_Init_thread. At most one MpiCluster per process, ever (MPI cannot be initialised
  // twice). Errors: MPI refuses to start or lacks MPI_THREAD_FUNNELED.
  static absl::StatusOr<std::unique_ptr<MpiCluster>> Create();
  ~MpiCluster() override;  // MPI_Finalize

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  absl::Status Send(int to, std::string_view bytes) override;
  absl::StatusOr<std::string> Receive(int from) override;
  absl::Status Broadcast(std::string& bytes) override;
  [[noreturn]] void Abort(int code) override;

 private:
  MpiCluster(int rank, int size, int local_size)
      : rank_(rank), size_(size), local_size_(local_size) {}
  const int rank_, size_, local_size_;
};

}  // namespace fedge::sim

#endif  // FEDGE_SIM_MPI_CLUSTER_H_
