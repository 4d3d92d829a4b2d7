#!/usr/bin/env python3
"""Checks that includes flow one way through the tree, from the compiler's
own dependency output (gcc -MM over every compile command of the build, and
the shim's sources, which a custom command builds with musl).

    ctl     -> lib/base, lib/rpc, lib/pbjson, lib/httpstream, proto
    agent (main.c) -> its parts below, runtime, store, lib/*, proto
      agent/cri      -> agent/pods (and cni, whose types its API uses), agent/services,
                        agent/config, runtime, store, lib/*, proto
      agent/services -> agent/config, store, lib/base, lib/rpc, lib/httpstream, proto
      agent/pods     -> agent/cni, agent/config, runtime, store, lib/base, lib/db (no protobuf)
      agent/cni -> lib/base        agent/config -> agent/services/authz, lib/base
      agent/services/metrics -> runtime, agent/cni (their stats types), lib/base
      agent/services/authz   -> lib/base
      agent/services/build   -> agent/pods, agent/services, runtime, store, lib/base, lib/rpc, proto
    runtime -> lib/base        store -> lib/base, lib/db
    lib/db, lib/rpc, lib/pbjson, lib/httpstream -> lib/base        lib/base -> libc only

A header of another module must also be one of its public headers (in its
include/ directory, or protoc-c's output). Prints each wrong-way or private
include with the file that makes it, and exits 1 if there is any."""

import argparse
import json
import os
import shlex
import subprocess
import sys

ALLOWED = {
    "lib/base": set(),
    "lib/db": {"lib/base"},
    "lib/rpc": {"lib/base"},
    "lib/pbjson": {"lib/base"},
    "lib/httpstream": {"lib/base"},
    "proto": set(),
    "runtime": {"lib/base"},
    "store": {"lib/base", "lib/db"},
    "agent": {"agent/cri", "agent/pods", "agent/services", "agent/services/metrics",
              "agent/services/authz", "agent/services/build", "agent/cni", "agent/config", "runtime", "store",
              "lib/base", "lib/db", "lib/rpc", "lib/pbjson", "proto"},
    # cni: the pods' API reports the pod network's interface stats in its types.
    "agent/cri": {"agent/pods", "agent/services", "agent/services/metrics", "agent/cni",
                  "agent/config", "runtime", "store", "lib/base", "lib/db", "lib/rpc",
                  "lib/pbjson", "proto"},
    "agent/services": {"agent/config", "store", "lib/base", "lib/rpc", "lib/httpstream", "proto"},
    "agent/pods": {"agent/cni", "agent/config", "runtime", "store", "lib/base", "lib/db"},
    # libagentbuild: builds run containers (runtime) on the store and commit
    # the pods' containers; cni through pods.h's types.
    "agent/services/build": {"agent/pods", "agent/services", "agent/cni", "agent/config",
                             "runtime", "store", "lib/base", "lib/rpc", "proto"},
    # libadmetrics and libadauthz: libraries of their own under services/.
    "agent/services/metrics": {"runtime", "agent/cni", "lib/base"},
    "agent/services/authz": {"lib/base"},
    "agent/cni": {"lib/base"},
    "agent/config": {"agent/services/authz", "lib/base"},
    "ctl": {"lib/base", "lib/rpc", "lib/pbjson", "lib/httpstream", "proto"},
}
# Sources compiled outside CMake's compile commands (runtime/CMakeLists.txt
# builds the shim with musl-gcc), with that command's include flags.
SHIM_SOURCES = ["runtime/shim/agentd-shim.c", "runtime/rt_init.c", "runtime/rt_setup.c",
                "runtime/rt_apply.c", "runtime/rt_pack.c"]
SHIM_FLAGS = ["-D_GNU_SOURCE", "-Iruntime", "-Iruntime/include", "-Ilib/base/include"]


def module_of(path, source, build):
    """The module a file belongs to, or None for files outside the layers
    (system headers, tests, generated files other than proto's)."""
    if path.startswith(build + os.sep):
        rel = os.path.relpath(path, build)
        return "proto" if rel.startswith("proto" + os.sep) else None
    if not path.startswith(source + os.sep):
        return None
    rel = os.path.relpath(path, source)
    if rel in ("agent/config.c", "agent/config.h"):
        return "agent/config"  # a library of its own (agentconfig), beside main.c
    for m in sorted(ALLOWED, key=len, reverse=True):
        if rel == m or rel.startswith(m + os.sep):
            return m
    return None


def is_public(path, module, source, build):
    if module in ("proto", "agent/config"):
        return True
    rel = os.path.relpath(path, os.path.join(source, module))
    return (os.sep + "include" + os.sep) in (os.sep + rel)


def dependencies(cmd, cwd):
    """The files one compile command reads, as the compiler reports them."""
    args = shlex.split(cmd)
    keep = []
    it = iter(args[1:])
    for a in it:
        if a in ("-I", "-D", "-U", "-isystem", "-idirafter", "-include"):
            keep += [a, next(it)]
        elif a.startswith(("-I", "-D", "-U", "-std=", "-isystem", "-idirafter")):
            keep.append(a)
    return keep


def run_mm(compiler, flags, src, cwd):
    out = subprocess.run([compiler, "-MM", "-MG"] + flags + [src], cwd=cwd,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("check_layers: %s -MM %s failed:\n%s" % (compiler, src, out.stderr))
    text = out.stdout.replace("\\\n", " ")
    deps = text.split(":", 1)[1].split()
    return [os.path.normpath(os.path.join(cwd, d)) for d in deps]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--cc", default="cc")
    a = ap.parse_args()
    source, build = os.path.realpath(a.source), os.path.realpath(a.build)
    units = []
    with open(os.path.join(build, "compile_commands.json")) as f:
        for e in json.load(f):
            src = os.path.normpath(os.path.join(e["directory"], e["file"]))
            units.append((src, dependencies(e["command"], e["directory"]), e["directory"]))
    for s in SHIM_SOURCES:
        units.append((os.path.join(source, s), SHIM_FLAGS, source))
    wrong = set()
    checked = 0
    for src, flags, cwd in units:
        m = module_of(src, source, build)
        if m is None or m == "proto":
            continue
        checked += 1
        for dep in run_mm(a.cc, flags, src, cwd):
            dm = module_of(dep, source, build)
            if dm is None or dm == m:
                continue
            why = None
            if dm not in ALLOWED[m]:
                why = "%s may not depend on %s" % (m, dm)
            elif not is_public(dep, dm, source, build):
                why = "private header of %s" % dm
            if why:
                wrong.add("%s includes %s: %s" % (os.path.relpath(src, source),
                                                  os.path.relpath(dep, source), why))
    for w in sorted(wrong):
        print(w)
    print("check_layers: %d sources, %d wrong-way or private includes" % (checked, len(wrong)))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
