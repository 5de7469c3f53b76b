#include "server/task_payload.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;

std::shared_ptr<const v1::ModelProto> Model(int hidden, uint64_t seed) {
  auto net = std::move(model::Sequential::Create(model::MlpSpec({6, hidden, 2}))).value();
  net->InitParameters(seed);
  return std::make_shared<const v1::ModelProto>(net->ToProto());
}

TEST(TaskPayloadTest, SectionsFollowTheHeadersManifestsAndCrc) {
  TaskAssignment task;
  task.header.set_task_id("j/1/0/dev");
  task.model = Model(5, 1);
  task.model_encoding = v1::TENSOR_ENCODING_INT8_PER_CHANNEL;
  task.teacher = Model(9, 2);
  task.teacher_encoding = v1::TENSOR_ENCODING_INT4_BLOCK32;
  TaskPayloadEncoder encoder;
  absl::StatusOr<EncodedTask> e = encoder.Encode(task);
  ASSERT_THAT(e.status(), IsOk());
  EXPECT_EQ(e->header.task_id(), "j/1/0/dev");
  ASSERT_EQ(e->sections.size(), 2u);
  const std::string payload = e->Payload();
  EXPECT_EQ(e->header.total_bytes(), static_cast<int64_t>(payload.size()));
  EXPECT_EQ(e->crc32, model::PayloadCrc32(payload));
  // The model's section decodes with its manifest, the teacher's with its own.
  const size_t model_bytes = e->sections[0]->bytes.size();
  v1::ModelProto m = *task.model, t = *task.teacher;
  ASSERT_THAT(model::DecodeModelParameters(e->header.manifest(), payload.substr(0, model_bytes),
                                           &m, model::DecodableEncodings()),
              IsOk());
  ASSERT_THAT(model::DecodeModelParameters(e->header.teacher_manifest(),
                                           payload.substr(model_bytes), &t,
                                           model::DecodableEncodings()),
              IsOk());
  EXPECT_EQ(e->header.manifest().tensors(0).encoding(), v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  EXPECT_EQ(e->header.teacher_manifest().tensors(0).encoding(), v1::TENSOR_ENCODING_INT4_BLOCK32);
  EXPECT_NEAR(m.parameters(0).values(3), task.model->parameters(0).values(3), 0.05);
}

TEST(TaskPayloadTest, EachModelIsEncodedOnceAndSharedByItsTasks) {
  TaskPayloadEncoder encoder;
  TaskAssignment a;
  a.model = Model(5, 1);
  TaskAssignment b = a;
  b.header.set_task_id("other");
  auto ea = encoder.Encode(a);
  auto eb = encoder.Encode(b);
  ASSERT_THAT(ea.status(), IsOk());
  ASSERT_THAT(eb.status(), IsOk());
  EXPECT_EQ(ea->sections[0].get(), eb->sections[0].get());
  // Another encoding of the same model is another section.
  b.model_encoding = v1::TENSOR_ENCODING_INT8_PER_CHANNEL;
  auto ec = encoder.Encode(b);
  ASSERT_THAT(ec.status(), IsOk());
  EXPECT_NE(ea->sections[0].get(), ec->sections[0].get());
  EXPECT_LT(ec->header.total_bytes(), ea->header.total_bytes());
  // The cache keeps the last few models; older ones are encoded again when asked.
  for (int i = 0; i < static_cast<int>(TaskPayloadEncoder::kMaxCachedModels) + 1; ++i) {
    TaskAssignment c;
    c.model = Model(4, 10 + i);
    ASSERT_THAT(encoder.Encode(c).status(), IsOk());
  }
  auto again = encoder.Encode(a);
  ASSERT_THAT(again.status(), IsOk());
  EXPECT_NE(again->sections[0].get(), ea->sections[0].get());
  EXPECT_EQ(again->Payload(), ea->Payload());
}

}  // namespace
}  // namespace fedge::server
