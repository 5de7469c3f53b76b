// Status helpers missing from Abseil 20220623: early return on error, assign-or-return, and
// an always-on invariant check.
#ifndef FEDGE_BASE_STATUS_MACROS_H_
#define FEDGE_BASE_STATUS_MACROS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FEDGE_STATUS_CONCAT_INNER_(a, b) a##b
#define FEDGE_STATUS_CONCAT_(a, b) FEDGE_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define FEDGE_RETURN_IF_ERROR(expr)                      \
  do {                                                   \
    const ::absl::Status fedge_status_ = (expr);         \
    if (!fedge_status_.ok()) return fedge_status_;       \
  } while (0)

// `lhs = value of statusor_expr`, or returns its status from the enclosing function.
// `lhs` may be a declaration: FEDGE_ASSIGN_OR_RETURN(auto x, MakeX());
#define FEDGE_ASSIGN_OR_RETURN(lhs, expr)                                            \
  FEDGE_ASSIGN_OR_RETURN_IMPL_(FEDGE_STATUS_CONCAT_(fedge_statusor_, __LINE__), lhs, \
                               expr)
#define FEDGE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

// A broken invariant is a bug: print where and abort, in every build type.
#define FEDGE_CHECK(cond)                                                            \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: FEDGE_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

// Aborts with the status message when `expr` is not OK (for examples and tests).
#define FEDGE_CHECK_OK(expr)                                                           \
  do {                                                                                 \
    const ::absl::Status fedge_status_ = (expr);                                       \
    if (!fedge_status_.ok()) {                                                         \
      std::fprintf(stderr, "%s:%d: FEDGE_CHECK_OK failed: %s\n", __FILE__, __LINE__,   \
                   fedge_status_.ToString().c_str());                                  \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

#endif  // FEDGE_BASE_STATUS_MACROS_H_
