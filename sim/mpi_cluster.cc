#include "sim/mpi_cluster.h"

// OpenMPI's mpi.h would otherwise pull in its deprecated C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

namespace fedge::sim {
namespace {

constexpr int kTag = 6;  // every message uses it
constexpr auto kPoll = std::chrono::microseconds(100);

absl::Status MpiError(const char* what, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  return absl::InternalError(absl::StrCat("MpiCluster: ", what, ": ", std::string(text, static_cast<size_t>(len))));
}

// Polls `request` to completion, sleeping between polls.
absl::Status WaitPolitely(MPI_Request* request, const char* what) {
  for (int done = 0;;) {
    if (int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
      return MpiError(what, rc);
    }
    if (done) return absl::OkStatus();
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace

bool LaunchedByMpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<MpiCluster>> MpiCluster::Create() {
  int provided = 0;
  if (int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MpiCluster: MPI_Init_thread failed (", rc, ")"));
  }
  // Errors come back as codes, not as an abort inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    return absl::UnavailableError("MpiCluster: MPI lacks MPI_THREAD_FUNNELED");
  }
  int rank = 0, size = 1, local_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm local;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local) ==
      MPI_SUCCESS) {
    MPI_Comm_size(local, &local_size);
    MPI_Comm_free(&local);
  }
  return std::unique_ptr<MpiCluster>(new MpiCluster(rank, size, local_size));
}

MpiCluster::~MpiCluster() { MPI_Finalize(); }

absl::Status MpiCluster::Send(int to, std::string_view bytes) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("MpiCluster: a message of ", bytes.size(), " bytes exceeds MPI's int count"));
  }
  MPI_Request request;
  if (int rc = MPI_Isend(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, to, kTag,
                         MPI_COMM_WORLD, &request);
      rc != MPI_SUCCESS) {
    return MpiError("MPI_Isend", rc);
  }
  return WaitPolitely(&request, "MPI_Isend");
}

absl::StatusOr<std::string> MpiCluster::Receive(int from) {
  MPI_Status status;
  for (int arrived = 0; !arrived;) {
    if (int rc = MPI_Iprobe(from, kTag, MPI_COMM_WORLD, &arrived, &status); rc != MPI_SUCCESS) {
      return MpiError("MPI_Iprobe", rc);
    }
    if (!arrived) std::this_thread::sleep_for(kPoll);
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  std::string bytes(static_cast<size_t>(count), '\0');
  MPI_Request request;
  if (int rc = MPI_Irecv(bytes.data(), count, MPI_BYTE, from, kTag, MPI_COMM_WORLD, &request);
      rc != MPI_SUCCESS) {
    return MpiError("MPI_Irecv", rc);
  }
  if (absl::Status s = WaitPolitely(&request, "MPI_Irecv"); !s.ok()) return s;
  return bytes;
}

absl::Status MpiCluster::Broadcast(std::string& bytes) {
  // Once, at start-up: plain blocking collectives.
  uint64_t n = bytes.size();
  if (int rc = MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD); rc != MPI_SUCCESS) {
    return MpiError("MPI_Bcast", rc);
  }
  if (n > static_cast<uint64_t>(INT_MAX)) {
    return absl::ResourceExhaustedError("MpiCluster: broadcast exceeds MPI's int count");
  }
  if (rank_ != 0) bytes.assign(n, '\0');
  if (int rc = MPI_Bcast(bytes.data(), static_cast<int>(n), MPI_BYTE, 0, MPI_COMM_WORLD);
      rc != MPI_SUCCESS) {
    return MpiError("MPI_Bcast", rc);
  }
  return absl::OkStatus();
}

void MpiCluster::Abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace fedge::sim
