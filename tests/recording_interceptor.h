// A client interceptor that records the serialized form of every message a channel sends,
// for tests that inspect what a device put on the wire (ClientRuntimeOptions.interceptors).
//
//   SentMessages sent;
//   options.interceptors = [&sent] {
//     std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> v;
//     v.push_back(std::make_unique<RecordingFactory>(&sent));
//     return v;
//   };
//   ... sent.Get()  // (method, bytes) in the order they were sent
#ifndef FEDGE_TESTS_RECORDING_INTERCEPTOR_H_
#define FEDGE_TESTS_RECORDING_INTERCEPTOR_H_

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

namespace fedge::testing {

// Every message one device sent: (method, serialized bytes).
class SentMessages {
 public:
  void Add(std::string method, std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.emplace_back(std::move(method), std::move(bytes));
  }
  std::vector<std::pair<std::string, std::string>> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> messages_;
};

// Records the serialized form of every message the channel sends.
class RecordingInterceptor final : public grpc::experimental::Interceptor {
 public:
  RecordingInterceptor(grpc::experimental::ClientRpcInfo* info, SentMessages* sink)
      : method_(info->method()), sink_(sink) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      grpc::ByteBuffer* buffer = methods->GetSerializedSendMessage();
      std::string bytes;
      if (buffer != nullptr) {
        std::vector<grpc::Slice> slices;
        if (buffer->Dump(&slices).ok()) {
          for (const grpc::Slice& s : slices) {
            bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
          }
        }
      }
      sink_->Add(method_, std::move(bytes));
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  SentMessages* sink_;
};

class RecordingFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit RecordingFactory(SentMessages* sink) : sink_(sink) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new RecordingInterceptor(info, sink_);
  }

 private:
  SentMessages* sink_;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_RECORDING_INTERCEPTOR_H_
