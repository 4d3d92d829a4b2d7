/* unpack.h — internal to libadstore: safe, streaming extraction of one image
 * layer (a tar, gzip- or zstd-compressed or plain, auto-detected) into its
 * own directory, to be used as an overlayfs lowerdir. Owned by the unpack
 * work; the pull code calls it while the layer's bytes arrive. */
#ifndef AGENTD_STORE_UNPACK_H
#define AGENTD_STORE_UNPACK_H

#include <stddef.h>
#include <sys/types.h>

#include "base.h"

/* Supplies the layer's (compressed) bytes: returns the count read into buf,
 * 0 at end of stream, or -1 with *err set (the unpack then fails with it). */
typedef ssize_t (*store_read_fn)(void *userdata, void *buf, size_t len, ad_error **err);

/* What a layer may unpack to unless configured: 64 GiB (agentd's
 * [images] max_unpacked_layer_size). */
#define STORE_DEFAULT_MAX_UNPACKED (64ULL << 30)

typedef struct store_unpack_opts {
	/* Allow device nodes other than overlay whiteouts (0:0 char devices).
	 * Off: a layer that carries one is rejected with AD_E_INVALID. */
	bool allow_devices;
	/* Limits against hostile layers: 0 selects the default. */
	size_t max_path_len;       /* default 4096 */
	size_t max_header_bytes;   /* pax/gnu long names and xattrs per entry, default 1 MiB */
	uint64_t max_entries;      /* default 10,000,000 */
	/* Uncompressed bytes (a gzip bomb stops here: AD_E_RESOURCE). */
	uint64_t max_unpacked_bytes; /* default STORE_DEFAULT_MAX_UNPACKED */
} store_unpack_opts;

typedef struct store_unpack_result {
	char diff_id[72];         /* "sha256:<64 hex>" of the uncompressed tar stream */
	uint64_t uncompressed_size;
	uint64_t entries;
} store_unpack_result;

/* Extracts the stream into `dest_dir` (which must exist and be empty),
 * resolving every path inside it, converting OCI whiteouts (.wh.<name>,
 * .wh..wh..opq) to overlayfs whiteouts (0:0 char device, the xattr
 * trusted.overlay.opaque=y), preserving owners, modes, xattrs, hardlinks and
 * times. Reads the stream to its end so the digest covers every byte. On
 * failure dest_dir may hold partial content: the caller removes it.
 *
 * Errors: a read_fn error comes back with its own code (message prefixed);
 * a malformed stream (bad or truncated compression, damaged tar, giant
 * headers) or a hostile entry (escape that cannot be contained, hardlink to a
 * missing or directory target, device when not allowed, impossible owner) is
 * AD_E_INVALID naming the entry; too many entries or a full disk is
 * AD_E_RESOURCE. Single-threaded: read_fn is called on the calling thread
 * only; several layers may be unpacked at once from different threads. */
int store_unpack_layer(const char *dest_dir, store_read_fn read_fn, void *userdata,
		       const store_unpack_opts *opts, store_unpack_result *ret_result,
		       ad_error **err);

/* pwrite of all n bytes (a short write, as on a disk that fills up, is
 * continued until it fails with its errno); -1 with errno set. */
int store_pwrite_all(int fd, const void *data, size_t n, off_t off);

#endif
