// Reference gRPC server for the benchmark (tests/bench/grpc/run): the
// upstream C++ gRPC implementation serving runtime.v1.RuntimeService/Version
// with the same answer as agentd, over h2c and/or TLS on TCP. Built at bench
// time against code generated from proto/cri/api.proto; every other CRI
// method answers UNIMPLEMENTED (the generated base class does that).
//
// Usage: ref_server [--h2c HOST:PORT]
//                   [--tls HOST:PORT --cert PEM --key PEM [--client-ca PEM]]
//                   [--sync]
// With --client-ca, TLS clients must present a certificate from that CA
// (mutual TLS, as agentd's TLS listener requires).
// Uses the callback API (the one upstream recommends for performance) unless
// --sync is given. Prints "ref_server ready" on stderr; exits 0 on SIGTERM.

// First: CRI's Signal enum has values named SIGABRT, SIGKILL ..., which the
// <signal.h> macros would clobber if they were defined before it.
#include "cri/api.grpc.pb.h"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

namespace {

void fill(runtime::v1::VersionResponse *resp) {
  resp->set_version("0.1.0");
  resp->set_runtime_name("agentd");
  resp->set_runtime_version("0.1.0+ref");
  resp->set_runtime_api_version("v1");
}

class CallbackRuntime final : public runtime::v1::RuntimeService::CallbackService {
  grpc::ServerUnaryReactor *Version(grpc::CallbackServerContext *ctx,
                                    const runtime::v1::VersionRequest *,
                                    runtime::v1::VersionResponse *resp) override {
    fill(resp);
    grpc::ServerUnaryReactor *r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }
};

class SyncRuntime final : public runtime::v1::RuntimeService::Service {
  grpc::Status Version(grpc::ServerContext *, const runtime::v1::VersionRequest *,
                       runtime::v1::VersionResponse *resp) override {
    fill(resp);
    return grpc::Status::OK;
  }
};

std::string slurp(const char *path) {
  std::ifstream f(path);
  if (!f) {
    std::cerr << "ref_server: cannot read " << path << "\n";
    std::exit(2);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

} // namespace

int main(int argc, char **argv) {
  const char *h2c = nullptr, *tls = nullptr, *cert = nullptr, *key = nullptr;
  const char *client_ca = nullptr;
  bool sync = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc) {
        std::cerr << "ref_server: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--h2c")
      h2c = next();
    else if (a == "--tls")
      tls = next();
    else if (a == "--cert")
      cert = next();
    else if (a == "--key")
      key = next();
    else if (a == "--client-ca")
      client_ca = next();
    else if (a == "--sync")
      sync = true;
    else {
      std::cerr << "usage: ref_server [--h2c HOST:PORT] [--tls HOST:PORT --cert PEM --key PEM"
                   " [--client-ca PEM]] [--sync]\n";
      return 2;
    }
  }

  // Block the signals before gRPC starts its threads; main waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  CallbackRuntime cb;
  SyncRuntime sy;
  grpc::ServerBuilder b;
  // Same message limit as agentd's default (kubelet's 16 MiB).
  b.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  b.SetMaxSendMessageSize(16 * 1024 * 1024);
  if (h2c)
    b.AddListeningPort(h2c, grpc::InsecureServerCredentials());
  if (tls) {
    if (!cert || !key) {
      std::cerr << "ref_server: --tls needs --cert and --key\n";
      return 2;
    }
    grpc::SslServerCredentialsOptions opts(
        client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    if (client_ca)
      opts.pem_root_certs = slurp(client_ca);
    opts.pem_key_cert_pairs.push_back({slurp(key), slurp(cert)});
    b.AddListeningPort(tls, grpc::SslServerCredentials(opts));
  }
  if (sync)
    b.RegisterService(&sy);
  else
    b.RegisterService(&cb);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server) {
    std::cerr << "ref_server: failed to start\n";
    return 1;
  }
  std::cerr << "ref_server ready (" << (sync ? "sync" : "callback") << " API)" << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
