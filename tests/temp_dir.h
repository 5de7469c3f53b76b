// A fresh directory for one test, made by mkdtemp under the system temp dir and removed
// with everything in it when the object goes.
#ifndef FEDGE_TESTS_TEMP_DIR_H_
#define FEDGE_TESTS_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace fedge::testing {

class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& prefix = "fedge_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    path_ = tmpl;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TEMP_DIR_H_
