// Helpers shared by the libFuzzer harnesses (tests/fuzz/*_fuzz.cc).
#ifndef FEDGE_TESTS_FUZZ_FUZZ_INPUT_H_
#define FEDGE_TESTS_FUZZ_FUZZ_INPUT_H_

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/string_view.h"

namespace fedge::fuzz {

// A file of this process, mode 0600 (so that readers that refuse files others can read
// accept it), rewritten with each input. Readers take paths, not bytes.
class ScratchFile {
 public:
  explicit ScratchFile(const char* tag) {
    std::string tmpl = std::string("/tmp/fedge-fuzz-") + tag + "-XXXXXX";
    fd_ = mkstemp(tmpl.data());
    if (fd_ < 0) abort();
    path_ = tmpl;
  }
  ~ScratchFile() {
    close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  const std::string& Write(absl::string_view bytes) {
    if (ftruncate(fd_, 0) != 0 || pwrite(fd_, bytes.data(), bytes.size(), 0) !=
                                      static_cast<ssize_t>(bytes.size())) {
      abort();
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// A broken invariant: a crash libFuzzer reports with the input.
#define FEDGE_FUZZ_ASSERT(cond)                                              \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond,     \
                   __FILE__, __LINE__);                                      \
      abort();                                                               \
    }                                                                        \
  } while (0)

}  // namespace fedge::fuzz

#endif  // FEDGE_TESTS_FUZZ_FUZZ_INPUT_H_
