/* spdy_frame_fuzz — libFuzzer target for libadhttpstream's SPDY/3.1 frame
 * parser (header blocks inflated with the SPDY dictionary), the input cut
 * into pieces of a fuzzer-chosen size. Built and run by
 * tests/fuzz/run.sh (seeds in corpus/spdy_frame_fuzz/). */
#include "httpstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Every byte handed out is read (ASan sees a bad pointer or length). */
static volatile uint8_t sink;
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] * 7 + 1;
	data++;
	size--;
	spdy_codec c;
	spdy_codec_init(&c);
	bool dead = false;
	for (size_t off = 0; off < size && !dead;) {
		size_t take = size - off < piece ? size - off : piece;
		spdy_feed(&c, data + off, take);
		off += take;
		spdy_event ev;
		const char *why;
		int r;
		while ((r = spdy_next(&c, &ev, &why)) == 1) {
			uint8_t sum = 0;
			for (size_t i = 0; i < ev.len; i++)
				sum += ev.data[i];
			for (size_t i = 0; i < ev.n_headers; i++)
				sum += (uint8_t)ev.headers[i].name[0] +
				       (uint8_t)ev.headers[i].value[ev.headers[i].value_len];
			sink = sum;
			spdy_event_clear(&ev);
		}
		dead = r < 0;
	}
	spdy_codec_free(&c);
	return 0;
}
