"""A real registry on loopback for tests: Debian's docker-registry (plain,
htpasswd basic auth, TLS with a test CA), and images built offline from
busybox-static with umoci and pushed with skopeo.

Usage:
    with Registry(tmpdir, auth=("u", "p"), tls=True) as reg:
        layout = ImageBuilder(tmpdir / "oci")
        layout.busybox("base")
        reg.push(layout, "base", "test/base:v1", fmt="v2s2")
"""
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import io
import time
import urllib.request
import ssl
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ls", "cat", "echo", "true", "false", "sleep", "httpd", "mkdir", "rm"]


def free_port(ipv6=False):
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("::1" if ipv6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    try:
        return subprocess.run([str(a) for a in args], **kw)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{args}: {e.stderr.decode(errors='replace')}") from e


def sha256_bytes(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Registry:
    """docker-registry serving a private temp dir on 127.0.0.1:<free port>."""

    def __init__(self, workdir, auth=None, tls=False, client_certs=False, ipv6=False,
                 storage=None, access_log=False, readonly=False):
        self.dir = Path(workdir) / f"registry-{os.getpid()}-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port(ipv6)
        self.host = f"[::1]:{self.port}" if ipv6 else f"127.0.0.1:{self.port}"
        self.auth = auth
        self.tls = tls or client_certs
        self.client_certs = client_certs
        self.proc = None
        self.certs_dir = None
        # Another registry's storage dir: serves what was pushed there (skopeo
        # cannot push to an IPv6 literal).
        self.storage = storage or self.dir / "data"
        # Log every request (with its protocol and client address) to registry.log.
        self.access_log = access_log
        # Refuses every write (storage maintenance mode): pushes fail.
        self.readonly = readonly

    def _make_tls(self):
        d = self.dir / "tls"
        d.mkdir()
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=agentd test CA", "-keyout", d / "ca.key", "-out", d / "ca.crt")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", d / "server.key", "-out", d / "server.csr")
        (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt",
            "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
            d / "ext.cnf", "-out", d / "server.crt")
        # certs.d layout: <dir>/<host:port>/ca.crt
        self.certs_dir = self.dir / "certs.d"
        (self.certs_dir / self.host).mkdir(parents=True)
        shutil.copy(d / "ca.crt", self.certs_dir / self.host / "ca.crt")
        if self.client_certs:
            # client.cert + client.key, signed by the same CA, required by the server
            run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=agentd client",
                "-keyout", self.certs_dir / self.host / "client.key", "-out", d / "client.csr")
            run("openssl", "x509", "-req", "-in", d / "client.csr", "-CA", d / "ca.crt",
                "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                "-out", self.certs_dir / self.host / "client.cert")
        return d

    def start(self):
        cfg = [
            "version: 0.1",
            "log:",
            f"  level: {'info' if self.access_log else 'error'}",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
        ]
        if self.readonly:
            cfg += ["  maintenance:", "    readonly:", "      enabled: true"]
        cfg += [
            "http:",
            f"  addr: '{self.host}'",
        ]
        if self.tls:
            d = self._make_tls()
            cfg += ["  tls:", f"    certificate: {d / 'server.crt'}", f"    key: {d / 'server.key'}"]
            if self.client_certs:
                cfg += ["    clientcas:", f"      - {d / 'ca.crt'}"]
        if self.auth:
            htp = self.dir / "htpasswd"
            run("htpasswd", "-Bbc", htp, self.auth[0], self.auth[1])
            cfg += ["auth:", "  htpasswd:", "    realm: agentd-test", f"    path: {htp}"]
        (self.dir / "config.yml").write_text("\n".join(cfg) + "\n")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: " + (self.dir / "registry.log").read_text())
            try:
                self.get("/v2/")
                return self
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry did not come up")

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def manifest(self, name, ref):
        accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json",
                            "application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json"])
        return json.loads(self.get(f"/v2/{name}/manifests/{ref}", accept=accept))

    def get(self, path, accept=None):
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=str(self.dir / "tls" / "ca.crt"))
            if self.client_certs:
                c = self.certs_dir / self.host
                ctx.load_cert_chain(str(c / "client.cert"), str(c / "client.key"))
        req = urllib.request.Request(self.url + path)
        if accept:
            req.add_header("Accept", accept)
        if self.auth:
            tok = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", "Basic " + tok)
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def push(self, layout, tag, dest, fmt=None, all_images=False, compress=None):
        """skopeo copy oci:<layout>:<tag> docker://<host>/<dest>."""
        args = ["skopeo", "copy", "--quiet"]
        if self.tls:
            args += ["--dest-cert-dir", self.certs_dir / self.host]
        else:
            args += ["--dest-tls-verify=false"]
        if self.auth:
            args += ["--dest-creds", f"{self.auth[0]}:{self.auth[1]}"]
        if fmt:
            args += ["--format", fmt]
        if all_images:
            args += ["--all"]
        if compress:
            args += ["--dest-compress-format", compress]
        args += [f"oci:{layout.path}:{tag}", f"docker://{self.host}/{dest}"]
        run(*args)


class ImageBuilder:
    """An OCI layout built offline: a busybox-static base made with umoci
    (unpack/repack: its `insert` writes tars without the final padding), plus
    layers crafted with tarfile (whiteouts, opaque dirs, zstd) appended by
    hand-written manifests."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "index.json").exists():
            run("umoci", "init", "--layout", self.path)

    def busybox(self, tag, marker="base", arch=None):
        """A one-layer image: /bin/busybox + applets, /etc/marker, Cmd ["sh"]."""
        bundle = self.path.parent / f"bundle-{tag}"
        run("umoci", "new", "--image", f"{self.path}:{tag}")
        run("umoci", "unpack", "--image", f"{self.path}:{tag}", bundle)
        root = bundle / "rootfs"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy(BUSYBOX, root / "bin" / "busybox")
        for a in APPLETS:
            os.symlink("busybox", root / "bin" / a)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "marker").write_text(marker + "\n")
        (root / "data").mkdir()
        (root / "data" / "old").write_text("old\n")
        (root / "data" / "keep").write_text("keep\n")
        (root / "gone").write_text("gone\n")
        run("umoci", "repack", "--image", f"{self.path}:{tag}", bundle)
        cfg = ["umoci", "config", "--image", f"{self.path}:{tag}", "--config.cmd", "sh"]
        if arch:
            cfg += ["--architecture", arch]
        run(*cfg)
        shutil.rmtree(bundle)

    def _index(self):
        return json.loads((self.path / "index.json").read_text())

    def descriptor(self, tag):
        for m in self._index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m
        raise KeyError(tag)

    def blob(self, digest):
        return (self.path / "blobs" / "sha256" / digest[7:]).read_bytes()

    def write_blob(self, data):
        d = sha256_bytes(data)
        (self.path / "blobs" / "sha256" / d[7:]).write_bytes(data)
        return d

    def set_tag(self, tag, desc):
        idx = self._index()
        idx["manifests"] = [m for m in idx["manifests"]
                            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
        desc = dict(desc)
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        idx["manifests"].append(desc)
        (self.path / "index.json").write_text(json.dumps(idx))

    def append_layer(self, src_tag, dst_tag, entries, compress="gzip"):
        """Adds a layer made of `entries` [(name, kind, data)] (kind: "file",
        "dir", "symlink" (data = target), "link" (data = target)) on top of
        src_tag and tags the result dst_tag."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, kind, data in entries:
                ti = tarfile.TarInfo(name)
                ti.mtime = 1700000000
                if kind == "file":
                    ti.size = len(data)
                    ti.mode = 0o644
                    tf.addfile(ti, io.BytesIO(data))
                    continue
                if kind == "dir":
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                elif kind == "symlink":
                    ti.type, ti.linkname = tarfile.SYMTYPE, data
                elif kind == "link":
                    ti.type, ti.linkname = tarfile.LNKTYPE, data
                tf.addfile(ti)
        raw = buf.getvalue()
        if compress == "gzip":
            import gzip
            blob, mt = gzip.compress(raw), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            blob = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True,
                                  check=True).stdout
            mt = "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            blob, mt = raw, "application/vnd.oci.image.layer.v1.tar"
        desc = self.descriptor(src_tag)
        manifest = json.loads(self.blob(desc["digest"]))
        config = json.loads(self.blob(manifest["config"]["digest"]))
        config["rootfs"]["diff_ids"].append(sha256_bytes(raw))
        config.setdefault("history", []).append({"created_by": f"append {compress} layer"})
        cdata = json.dumps(config).encode()
        manifest["config"] = {"mediaType": manifest["config"]["mediaType"],
                              "digest": self.write_blob(cdata), "size": len(cdata)}
        manifest["layers"].append({"mediaType": mt, "digest": self.write_blob(blob),
                                   "size": len(blob)})
        mdata = json.dumps(manifest).encode()
        self.set_tag(dst_tag, {"mediaType": desc["mediaType"], "digest": self.write_blob(mdata),
                               "size": len(mdata)})
        return sha256_bytes(raw)

    def break_diff_id(self, src_tag, dst_tag):
        """dst_tag: src_tag with a config whose last diff_id is wrong."""
        desc = self.descriptor(src_tag)
        manifest = json.loads(self.blob(desc["digest"]))
        config = json.loads(self.blob(manifest["config"]["digest"]))
        config["rootfs"]["diff_ids"][-1] = "sha256:" + "0" * 64
        cdata = json.dumps(config).encode()
        manifest["config"] = dict(manifest["config"], digest=self.write_blob(cdata),
                                  size=len(cdata))
        mdata = json.dumps(manifest).encode()
        self.set_tag(dst_tag, {"mediaType": desc["mediaType"], "digest": self.write_blob(mdata),
                               "size": len(mdata)})

    def multiarch(self, tag, per_arch):
        """An OCI index `tag` over images {arch: tag} already in the layout."""
        manifests = []
        for arch, t in per_arch.items():
            desc = dict(self.descriptor(t))
            desc.pop("annotations", None)
            desc["platform"] = {"os": "linux", "architecture": arch}
            manifests.append(desc)
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": manifests}
        data = json.dumps(index).encode()
        self.set_tag(tag, {"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": self.write_blob(data), "size": len(data)})


class AuthProxy:
    """A token-auth front for a plain Registry, for the parts docker-registry
    cannot show by itself: the Bearer flow of distribution's
    docs/spec/auth/token.md (realm, service, scope), blobs redirected to
    another origin ("storage", which must never see the credentials), and
    injected faults per blob digest: "503", "reset" (half the body, then the
    connection drops), "stall" (half the body, then silence), "expire" (all
    tokens revoked, answered 401), "corrupt" (the first byte flipped), "slow"
    (0.3 s before the answer). Counts the TCP connections it accepts."""

    def __init__(self, upstream, creds=None, redirect=True):
        import collections
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream
        self.creds = creds
        self.redirect = redirect
        self.tokens = set()
        self.token_scopes = {}  # token -> the scope it was asked for
        self.push_requests = []  # (method, path) of the push requests passed on
        self.token_requests = []
        self.blob_requests = collections.Counter()
        self.storage_requests = []  # (digest, Authorization header, Range header)
        self.faults = {}
        self.identity_token = None
        self.deny = None  # a message: answer 403 to every authorised request
        self.active = self.max_active = 0  # blob transfers at once
        self.connections = collections.Counter()  # accepted, by "front" / "storage"
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._cache = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with proxy.lock:
                    proxy.connections["storage" if self.server is proxy.storage
                                      else "front"] += 1

            def reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if not self.path.startswith("/token"):
                    return proxy._push(self, "POST")
                n = int(self.headers.get("Content-Length", "0"))
                proxy._token_post(self, self.rfile.read(n).decode())

            def do_HEAD(self):
                proxy._push(self, "HEAD")

            def do_PUT(self):
                proxy._push(self, "PUT")

            def do_PATCH(self):
                proxy._push(self, "PATCH")

            def do_GET(self):
                try:
                    if self.server is proxy.storage:
                        proxy._storage(self)
                    else:
                        proxy._front(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.front = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.front.daemon_threads = self.storage.daemon_threads = True
        self.host = f"127.0.0.1:{self.front.server_address[1]}"
        self.storage_host = f"127.0.0.1:{self.storage.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in (self.front, self.storage)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for s in (self.front, self.storage):
            s.shutdown()
            s.server_close()

    def _fault(self, digest):
        with self.lock:
            lst = self.faults.get(digest)
            return lst.pop(0) if lst else None

    def _upstream_blob(self, name, digest):
        if digest not in self._cache:
            self._cache[digest] = self.upstream.get(f"/v2/{name}/blobs/{digest}")
        return self._cache[digest]

    def _token_post(self, h, body):
        """The OAuth2 refresh-token grant: an identity token stands for the password."""
        from urllib.parse import parse_qs
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.token_requests.append(form)
        if form.get("grant_type") != "refresh_token" or \
                form.get("refresh_token") != self.identity_token:
            return h.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}')
        tok = base64.b64encode(os.urandom(18)).decode()
        with self.lock:
            self.tokens.add(tok)
        h.reply(200, json.dumps({"access_token": tok, "expires_in": 300}).encode(),
                [("Content-Type", "application/json")])

    def _push(self, h, method):
        """A push's request (HEAD, POST, PUT, PATCH), passed on to the
        upstream registry once its token has the scope: pull for HEAD,
        pull,push for the others. Upload Locations are made to point here."""
        from urllib.parse import urlparse
        u = urlparse(h.path)
        name = None
        for part in ("/blobs/", "/manifests/"):
            if u.path.startswith("/v2/") and part in u.path:
                name = u.path[4:u.path.index(part)]
        n = int(h.headers.get("Content-Length", "0"))
        body = h.rfile.read(n) if n else None
        if not name:
            return h.reply(404)
        action = "pull" if method == "HEAD" else "pull,push"
        scope = f"repository:{name}:{action}"
        auth = h.headers.get("Authorization", "")
        tok = auth[7:] if auth.startswith("Bearer ") else None
        if tok not in self.tokens or action not in self.token_scopes.get(tok, "").split(":")[-1]:
            return self._challenge(h, scope, head=method == "HEAD")
        self.push_requests.append((method, u.path))
        headers = {k: h.headers[k] for k in ("Content-Type", "Content-Range")
                   if h.headers.get(k)}
        req = urllib.request.Request(self.upstream.url + h.path, data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                code, data, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            code, data, rh = e.code, e.read(), e.headers
        out = []
        for k in ("Location", "Docker-Content-Digest", "Content-Type", "Range",
                  "Docker-Upload-UUID"):
            v = rh.get(k)
            if v and k == "Location":
                v = v.replace(self.upstream.url, f"http://{self.host}")
            if v:
                out.append((k, v))
        if method == "HEAD":
            h.send_response(code)
            for k, v in out:
                h.send_header(k, v)
            h.send_header("Content-Length", rh.get("Content-Length", "0"))
            return h.end_headers()
        h.reply(code, data, out)

    def _challenge(self, h, scope, head=False):
        realm = f"http://{self.host}/token"
        ch = f'Bearer realm="{realm}",service="agentd-test"'
        if scope:
            ch += f',scope="{scope}"'
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                       "message": "authentication required"}]}).encode()
        if head:  # no body after a HEAD
            h.send_response(401)
            h.send_header("WWW-Authenticate", ch)
            h.send_header("Content-Length", "0")
            return h.end_headers()
        h.reply(401, body, [("WWW-Authenticate", ch), ("Content-Type", "application/json")])

    def _front(self, h):
        from urllib.parse import urlparse, parse_qs
        u = urlparse(h.path)
        if u.path == "/token":
            q = parse_qs(u.query)
            self.token_requests.append({k: v[0] for k, v in q.items()})
            if self.creds:
                want = "Basic " + base64.b64encode(
                    f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
                if h.headers.get("Authorization") != want:
                    body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                                   "message": "bad user or password"}]})
                    return h.reply(401, body.encode(), [("Content-Type", "application/json")])
            tok = base64.b64encode(os.urandom(18)).decode()
            with self.lock:
                self.tokens.add(tok)
                self.token_scopes[tok] = q.get("scope", [""])[0]
            body = json.dumps({"access_token": tok, "expires_in": 300}).encode()
            return h.reply(200, body, [("Content-Type", "application/json")])
        parts = u.path.split("/")
        # /v2/<name...>/(manifests|blobs)/<ref>
        scope = None
        if len(parts) >= 5 and parts[-2] in ("manifests", "blobs"):
            scope = f"repository:{'/'.join(parts[2:-2])}:pull"
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return self._challenge(h, scope)
        if u.path == "/v2/":
            return h.reply(200, b"{}")
        if not scope:
            return h.reply(404)
        name, kind, ref = "/".join(parts[2:-2]), parts[-2], parts[-1]
        if self.deny:
            body = json.dumps({"errors": [{"code": "DENIED", "message": self.deny}]}).encode()
            return h.reply(403, body, [("Content-Type", "application/json")])
        if kind == "manifests":
            req = urllib.request.Request(f"{self.upstream.url}/v2/{name}/manifests/{ref}",
                                         headers={"Accept": h.headers.get("Accept", "")})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return h.reply(200, r.read(), [
                        ("Content-Type", r.headers["Content-Type"]),
                        ("Docker-Content-Digest", r.headers["Docker-Content-Digest"])])
            except urllib.error.HTTPError as e:
                return h.reply(e.code, e.read(), [("Content-Type", "application/json")])
        with self.lock:
            self.blob_requests[ref] += 1
        fault = self._fault(ref)
        if fault == "503":
            return h.reply(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}')
        if fault == "expire":
            with self.lock:
                self.tokens.clear()
            return self._challenge(h, scope)
        if self.redirect:
            loc = f"http://{self.storage_host}/storage/{name}/{ref}?sig=x"
            if fault:
                with self.lock:
                    self.faults.setdefault(ref, []).insert(0, fault)
            return h.reply(307, b"", [("Location", loc)])
        return self._serve_blob(h, name, ref, fault)

    def _storage(self, h):
        from urllib.parse import urlparse
        parts = urlparse(h.path).path.split("/")
        name, digest = "/".join(parts[2:-1]), parts[-1]
        self.storage_requests.append((digest, h.headers.get("Authorization"),
                                      h.headers.get("Range")))
        return self._serve_blob(h, name, digest, self._fault(digest))

    def _serve_blob(self, h, name, digest, fault):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if fault == "slow":
                time.sleep(0.3)
            self._serve_blob_body(h, name, digest, fault)
        finally:
            with self.lock:
                self.active -= 1

    def _serve_blob_body(self, h, name, digest, fault):
        data = self._upstream_blob(name, digest)
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        body = data[start:]
        if fault == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if fault in ("reset", "stall"):
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if fault == "stall":
                self.stop_event.wait(8)
            h.close_connection = True
            import socket as _s
            try:
                h.connection.shutdown(_s.SHUT_RDWR)
            except OSError:
                pass
            return
        h.wfile.write(body)
