# store/unpack.c unit test (real files, overlayfs; runs as root).
# Linked against libadfetch, which carries unpack.c.
agentd_unit_test(unpack_test adfetch adbase PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
target_include_directories(unpack_test PRIVATE ${CMAKE_SOURCE_DIR}/store)
target_link_libraries(unpack_test PRIVATE Threads::Threads)
set_tests_properties(unit.unpack_test PROPERTIES TIMEOUT 120)

# libFuzzer target (not a ctest): only with clang. unpack.c is compiled into
# it directly so the fuzzer's coverage instrumentation reaches it.
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(unpack_fuzz ${CMAKE_SOURCE_DIR}/tests/fuzz/unpack_fuzz.c
                 ${CMAKE_SOURCE_DIR}/store/unpack.c)
  target_compile_options(unpack_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(unpack_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
  target_include_directories(unpack_fuzz PRIVATE ${CMAKE_SOURCE_DIR}/store)
  target_link_libraries(unpack_fuzz PRIVATE adbase PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
endif()
