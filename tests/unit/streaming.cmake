# libadstreaming (agent/services/streaming): its token store, through the
# private header.
agentd_unit_test(streaming_test adstreaming adhttpstream adbase)
target_include_directories(streaming_test PRIVATE ${CMAKE_SOURCE_DIR}/agent/services/streaming)
