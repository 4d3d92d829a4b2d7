# store/unpack.c unit test (real files, overlayfs; runs as root).
# Linked against libadfetch, which carries unpack.c.
agentd_unit_test(unpack_test adfetch adbase PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
target_include_directories(unpack_test PRIVATE ${CMAKE_SOURCE_DIR}/store)
target_link_libraries(unpack_test PRIVATE Threads::Threads)
set_tests_properties(unit.unpack_test PROPERTIES TIMEOUT 120)


# store/commit.c's layer writer (whiteouts, opaque dirs, reproducibility; root).
agentd_unit_test(layer_write_test adfetch adbase PkgConfig::LIBARCHIVE)
target_include_directories(layer_write_test PRIVATE ${CMAKE_SOURCE_DIR}/store)
