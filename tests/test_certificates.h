// Throwaway TLS material for tests, made with openssl in `dir`: a CA (ca.crt, ca.key), a
// server certificate for localhost and 127.0.0.1 (server.crt, server.key) and a client
// certificate (client.crt, client.key), both signed by the CA, valid for a day.
//
//   ASSERT_THAT(MakeTestCertificates(dir), IsOk());
#ifndef FEDGE_TESTS_TEST_CERTIFICATES_H_
#define FEDGE_TESTS_TEST_CERTIFICATES_H_

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fedge::testing {

inline absl::Status MakeTestCertificates(const std::string& d) {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  std::ofstream(d + "/server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  const std::vector<std::string> commands = {
      absl::StrCat("openssl req -x509 ", ec, " -subj /CN=fedge-test-ca -days 1 -keyout ", d,
                   "/ca.key -out ", d, "/ca.crt"),
      absl::StrCat("openssl req ", ec, " -subj /CN=localhost -keyout ", d, "/server.key -out ",
                   d, "/server.csr"),
      absl::StrCat("openssl x509 -req -in ", d, "/server.csr -CA ", d, "/ca.crt -CAkey ", d,
                   "/ca.key -CAcreateserial -days 1 -extfile ", d, "/server.ext -out ", d,
                   "/server.crt"),
      absl::StrCat("openssl req ", ec, " -subj /CN=device-1 -keyout ", d, "/client.key -out ",
                   d, "/client.csr"),
      absl::StrCat("openssl x509 -req -in ", d, "/client.csr -CA ", d, "/ca.crt -CAkey ", d,
                   "/ca.key -CAcreateserial -days 1 -out ", d, "/client.crt"),
  };
  for (const std::string& c : commands) {
    const std::string log = d + "/openssl.log";
    if (std::system((c + " > " + log + " 2>&1").c_str()) != 0) {
      std::ifstream in(log);
      std::stringstream out;
      out << in.rdbuf();
      return absl::InternalError(absl::StrCat(c, ": ", out.str()));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TEST_CERTIFICATES_H_
