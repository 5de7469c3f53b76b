// Bit-for-bit comparison of two models' parameters, naming the first value that differs: for
// tests that a restart, a batching or a transport leaves the trained model unchanged.
#ifndef FEDGE_TESTS_MODEL_COMPARE_H_
#define FEDGE_TESTS_MODEL_COMPARE_H_

#include "gtest/gtest.h"
#include "proto/model.pb.h"

namespace fedge::testing {

inline void ExpectSameParameters(const v1::ModelProto& a, const v1::ModelProto& b) {
  ASSERT_EQ(a.parameters_size(), b.parameters_size());
  for (int i = 0; i < a.parameters_size(); ++i) {
    ASSERT_EQ(a.parameters(i).name(), b.parameters(i).name());
    ASSERT_EQ(a.parameters(i).values_size(), b.parameters(i).values_size());
    for (int k = 0; k < a.parameters(i).values_size(); ++k) {
      ASSERT_EQ(a.parameters(i).values(k), b.parameters(i).values(k))
          << a.parameters(i).name() << "[" << k << "]";
    }
  }
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_MODEL_COMPARE_H_
