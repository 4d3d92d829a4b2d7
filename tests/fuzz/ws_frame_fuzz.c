/* ws_frame_fuzz — libFuzzer target for libadhttpstream's WebSocket frame
 * parser (masking, 16/64-bit lengths, fragments with control frames in
 * between), as a server and as a client. Built and run by
 * tests/fuzz/run.sh (seeds in corpus/ws_frame_fuzz/). */
#include "httpstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Every byte handed out is read (ASan sees a bad pointer or length). */
static volatile uint8_t sink;
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool server = data[0] & 1;
	size_t piece = (size_t)(data[0] >> 1) * 3 + 1;
	data++;
	size--;
	ws_codec c;
	ws_codec_init(&c, server);
	bool dead = false;
	for (size_t off = 0; off < size && !dead;) {
		size_t take = size - off < piece ? size - off : piece;
		ws_feed(&c, data + off, take);
		off += take;
		ws_event ev;
		const char *why;
		int r;
		while ((r = ws_next(&c, &ev, &why)) == 1) {
			uint8_t sum = 0;
			for (size_t i = 0; i < ev.len; i++)
				sum += ev.data[i];
			sink = sum;
		}
		dead = r < 0;
	}
	ws_codec_free(&c);
	return 0;
}
