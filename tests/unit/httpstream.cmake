# libadhttpstream (lib/httpstream): the SPDY/WebSocket codecs and the HTTP
# upgrade head in memory.
agentd_unit_test(httpstream_test adhttpstream adbase)
