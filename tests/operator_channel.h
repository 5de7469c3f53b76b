// Operators for tests: an operators file with one token per role, and a channel whose every
// call carries a token (`authorization: Bearer <token>`, as fedgectl sends it).
//
//   TestOperators ops(dir);                       // <dir>/operators: "op" and "viewer"
//   so.admin_listen_address = "127.0.0.1:0";  so.admin_credentials = insecure;
//   so.admin_plaintext = true;  so.operators = ops.tokens();
//   auto admin = v1::Admin::NewStub(OperatorChannel(target, creds, ops.operator_token()));
#ifndef FEDGE_TESTS_OPERATOR_CHANNEL_H_
#define FEDGE_TESTS_OPERATOR_CHANNEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include "base/status_macros.h"
#include "server/operator_tokens.h"

namespace fedge::testing {

class TestOperators {
 public:
  explicit TestOperators(const std::string& dir)
      : tokens_(std::make_unique<server::OperatorTokens>(server::OperatorTokens::PathIn(dir))) {
    absl::StatusOr<std::string> op = tokens_->Add("op", server::OperatorRole::kOperator, 1);
    absl::StatusOr<std::string> viewer = tokens_->Add("viewer", server::OperatorRole::kViewer, 1);
    FEDGE_CHECK(op.ok() && viewer.ok());
    operator_token_ = *op;
    viewer_token_ = *viewer;
  }
  server::OperatorTokens* tokens() { return tokens_.get(); }
  const std::string& operator_token() const { return operator_token_; }
  const std::string& viewer_token() const { return viewer_token_; }

 private:
  std::unique_ptr<server::OperatorTokens> tokens_;
  std::string operator_token_, viewer_token_;
};

// Adds `authorization: Bearer <token>` to every call (nothing when the token is empty).
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(std::string token) : token_(std::move(token)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!token_.empty() &&
        methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", "Bearer " + token_});
    }
    methods->Proceed();
  }

 private:
  std::string token_;
};

class BearerFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerFactory(std::string token) : token_(std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(token_);
  }

 private:
  std::string token_;
};

inline std::shared_ptr<grpc::Channel> OperatorChannel(
    const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials,
    const std::string& token, grpc::ChannelArguments args = {}) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> f;
  f.push_back(std::make_unique<BearerFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, std::move(credentials),
                                                                 args, std::move(f));
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_OPERATOR_CHANNEL_H_
