#!/bin/sh
# Builds agentd's demo image offline from Debian's busybox-static: a rootfs
# with /bin/busybox, its applet symlinks and a page for httpd; Cmd runs httpd
# in the foreground on port 8080. Writes, under OUTDIR (default ./demo-image-out):
#   oci/                 an OCI image layout, tag "latest"
#   demo-image.tar       a docker-archive (docker save format), agentd/demo:latest
#   demo-image.oci.tar   an oci-archive
# Needs: busybox-static, umoci, skopeo (deploy/install-deps.sh installs them).
set -eu

out=${1:-./demo-image-out}
name=${DEMO_IMAGE_NAME:-agentd/demo:latest}
busybox=${BUSYBOX:-/bin/busybox}

for tool in umoci skopeo; do
	command -v "$tool" >/dev/null || { echo "build.sh: $tool not found" >&2; exit 69; }
done
[ -x "$busybox" ] || { echo "build.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 69; }
# A dynamically linked busybox would need its libraries in the image.
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
	echo "build.sh: $busybox is not statically linked" >&2
	exit 65
fi

rm -rf "$out/oci" "$out/bundle" "$out/demo-image.tar" "$out/demo-image.oci.tar"
mkdir -p "$out"
rootless=
[ "$(id -u)" = 0 ] || rootless=--rootless

umoci init --layout "$out/oci"
umoci new --image "$out/oci:latest"
umoci unpack $rootless --image "$out/oci:latest" "$out/bundle" >/dev/null
root=$out/bundle/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/www" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
# Every applet this busybox has, as a relative symlink.
for applet in $("$busybox" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '<html><body><h1>Hello from agentd</h1></body></html>\n' >"$root/www/index.html"
umoci repack --image "$out/oci:latest" "$out/bundle"
rm -rf "$out/bundle"
umoci config --image "$out/oci:latest" \
	--os linux --architecture "$(dpkg --print-architecture 2>/dev/null || echo amd64)" \
	--config.env PATH=/bin \
	--config.workingdir / \
	--config.exposedports 8080/tcp \
	--config.cmd httpd --config.cmd -f --config.cmd -v --config.cmd -p \
	--config.cmd 8080 --config.cmd -h --config.cmd /www \
	--config.label org.opencontainers.image.title=agentd-demo
umoci gc --layout "$out/oci"

skopeo copy --quiet "oci:$out/oci:latest" "docker-archive:$out/demo-image.tar:$name"
skopeo copy --quiet "oci:$out/oci:latest" "oci-archive:$out/demo-image.oci.tar:$name"
echo "demo image $name: $out/oci (OCI layout), $out/demo-image.tar (docker-archive), $out/demo-image.oci.tar (oci-archive)"
