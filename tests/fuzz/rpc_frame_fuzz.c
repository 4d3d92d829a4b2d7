/* rpc_frame_fuzz — libFuzzer target for libadrpc's I/O-free wire code: the
 * length-prefixed message framer (input cut into DATA-frame-sized pieces at
 * fuzzer-chosen points), grpc-message percent-decoding and grpc-timeout
 * parsing. Not part of ctest. Build:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Ilib/rpc -Ilib/rpc/include -Ilib/base/include \
 *     $(pkg-config --cflags libprotobuf-c) tests/fuzz/rpc_frame_fuzz.c lib/rpc/util.c \
 *     lib/base/error.c lib/base/log.c \
 *     $(pkg-config --libs libprotobuf-c) -o /tmp/rpc_frame_fuzz
 */
#include <stdlib.h>
#include <string.h>

#include "rpc_int.h"

typedef struct fuzz_ctx {
	size_t msgs;
	size_t bytes;
	uint8_t sum;
} fuzz_ctx;

static int on_msg(const uint8_t *msg, size_t len, bool compressed, void *ctx)
{
	fuzz_ctx *fc = ctx;
	(void)compressed;
	/* Touch every byte so ASan sees out-of-bounds views. */
	for (size_t i = 0; i < len; i++)
		fc->sum += msg[i];
	fc->msgs++;
	fc->bytes += len;
	return fc->msgs > 1000 ? RPC_INTERNAL : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* First byte: the receive limit (as a power of two); second: piece size. */
	size_t max = (size_t)1 << (data[0] % 24);
	size_t piece = (size_t)data[1] + 1;
	data += 2;
	size -= 2;

	rpc_framer fr = {0};
	fuzz_ctx fc = {0};
	for (size_t off = 0; off < size;) {
		size_t take = size - off < piece ? size - off : piece;
		uint32_t big = 0;
		int r = rpc_framer_feed(&fr, data + off, take, max, on_msg, &fc, &big);
		if (r == RPC_RESOURCE_EXHAUSTED && big <= max)
			abort(); /* refused a message within the limit */
		if (r != RPC_OK)
			break;
		if (rpc_framer_buffered(&fr) > max)
			abort(); /* buffered more than the limit allows */
		off += take;
	}
	rpc_framer_reset(&fr);

	char *dec = rpc_percent_decode((const char *)data, size);
	char *enc = rpc_percent_encode(dec, size + 1);
	char *back = rpc_percent_decode(enc, strlen(enc));
	if (strcmp(back, dec) != 0)
		abort(); /* encode/decode must round-trip */
	free(dec);
	free(enc);
	free(back);

	int64_t ns;
	(void)rpc_timeout_parse((const char *)data, size, &ns);
	return 0;
}
