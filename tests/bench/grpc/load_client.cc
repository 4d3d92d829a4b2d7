// Closed-loop gRPC load generator for the benchmark (tests/bench/grpc/run),
// used where h2load cannot go: h2load cannot present a client certificate,
// and agentd's TLS listener is mutual TLS only. The same client loads both
// servers, so its own cost weighs equally on each.
//
// Usage: load_client --target HOST:PORT [--ca PEM --cert PEM --key PEM]
//                    [-n TOTAL] [-c CONNECTIONS] [-m STREAMS_PER_CONNECTION]
// Without --ca it speaks h2c. Prints one line:
//   ok=N failed=N seconds=S rps=R p50_ms=X p99_ms=Y mean_ms=Z
// Exit status 1 if any call failed.

#include "cri/api.grpc.pb.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace {

using clk = std::chrono::steady_clock;

std::string slurp(const std::string &path) {
  std::ifstream f(path);
  if (!f) {
    std::cerr << "load_client: cannot read " << path << "\n";
    std::exit(2);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Shared {
  long total = 0;
  std::atomic<long> issued{0};
  std::atomic<long> done{0};
  std::atomic<long> failed{0};
  std::vector<uint32_t> lat_us;
  std::mutex mu;
  std::condition_variable cv;
  int active_loops = 0;
};

// One closed loop: issues a call, and the next one when it completes.
class Loop {
public:
  Loop(runtime::v1::RuntimeService::Stub *stub, Shared *sh) : stub_(stub), sh_(sh) {
    req_.set_version("v1");
  }
  void next() {
    long i = sh_->issued.fetch_add(1);
    if (i >= sh_->total) {
      std::lock_guard<std::mutex> g(sh_->mu);
      if (--sh_->active_loops == 0)
        sh_->cv.notify_all();
      return;
    }
    idx_ = i;
    ctx_ = std::make_unique<grpc::ClientContext>();
    resp_.Clear();
    start_ = clk::now();
    stub_->async()->Version(ctx_.get(), &req_, &resp_, [this](grpc::Status s) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(clk::now() - start_);
      sh_->lat_us[idx_] = (uint32_t)std::min<int64_t>(us.count(), UINT32_MAX);
      if (!s.ok() || resp_.runtime_name().empty()) {
        if (sh_->failed.fetch_add(1) == 0)
          std::cerr << "load_client: call failed: " << s.error_code() << " "
                    << s.error_message() << "\n";
      }
      sh_->done.fetch_add(1);
      next();
    });
  }

private:
  runtime::v1::RuntimeService::Stub *stub_;
  Shared *sh_;
  runtime::v1::VersionRequest req_;
  runtime::v1::VersionResponse resp_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  clk::time_point start_;
  long idx_ = 0;
};

} // namespace

int main(int argc, char **argv) {
  std::string target, ca, cert, key;
  long n = 100000;
  int conns = 4, streams = 16;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "load_client: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--target")
      target = val();
    else if (a == "--ca")
      ca = val();
    else if (a == "--cert")
      cert = val();
    else if (a == "--key")
      key = val();
    else if (a == "-n")
      n = std::stol(val());
    else if (a == "-c")
      conns = std::stoi(val());
    else if (a == "-m")
      streams = std::stoi(val());
    else {
      std::cerr << "usage: load_client --target HOST:PORT [--ca PEM --cert PEM --key PEM] "
                   "[-n TOTAL] [-c CONNS] [-m STREAMS]\n";
      return 2;
    }
  }
  if (target.empty() || n <= 0 || conns <= 0 || streams <= 0) {
    std::cerr << "load_client: bad arguments\n";
    return 2;
  }

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!ca.empty()) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = slurp(ca);
    if (!cert.empty()) {
      o.pem_cert_chain = slurp(cert);
      o.pem_private_key = slurp(key);
    }
    creds = grpc::SslCredentials(o);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }

  // One TCP connection per channel: distinct args keep gRPC from sharing
  // a subchannel between them.
  std::vector<std::shared_ptr<grpc::Channel>> chans;
  std::vector<std::unique_ptr<runtime::v1::RuntimeService::Stub>> stubs;
  for (int i = 0; i < conns; i++) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.bench_channel_index", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
    if (!ca.empty())
      args.SetSslTargetNameOverride("localhost");
    auto ch = grpc::CreateCustomChannel(target, creds, args);
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::cerr << "load_client: cannot connect to " << target << "\n";
      return 1;
    }
    chans.push_back(ch);
    stubs.push_back(runtime::v1::RuntimeService::NewStub(ch));
  }

  Shared sh;
  sh.total = n;
  sh.lat_us.assign(n, 0);
  std::vector<std::unique_ptr<Loop>> loops;
  for (int i = 0; i < conns; i++)
    for (int j = 0; j < streams; j++)
      loops.push_back(std::make_unique<Loop>(stubs[i].get(), &sh));
  sh.active_loops = (int)loops.size();
  auto t0 = clk::now();
  for (auto &l : loops)
    l->next();
  {
    std::unique_lock<std::mutex> g(sh.mu);
    sh.cv.wait(g, [&] { return sh.active_loops == 0; });
  }
  double secs = std::chrono::duration<double>(clk::now() - t0).count();

  std::vector<uint32_t> lat = sh.lat_us;
  std::sort(lat.begin(), lat.end());
  double mean = 0;
  for (uint32_t v : lat)
    mean += v;
  mean /= (double)lat.size();
  auto pct = [&](double p) {
    size_t k = std::min(lat.size() - 1, (size_t)(p / 100.0 * (double)lat.size()));
    return lat[k] / 1000.0;
  };
  std::printf("ok=%ld failed=%ld seconds=%.3f rps=%.0f p50_ms=%.3f p99_ms=%.3f mean_ms=%.3f\n",
              sh.done.load() - sh.failed.load(), sh.failed.load(), secs, (double)n / secs,
              pct(50), pct(99), mean / 1000.0);
  return sh.failed.load() ? 1 : 0;
}
