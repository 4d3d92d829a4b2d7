# store/unpack.c unit test (real files, overlayfs; runs as root).
# Linked against libadstore once it carries unpack.c; until then the unpacker
# is compiled straight into the test (never both, to avoid duplicate symbols).
set(unpack_in_adstore FALSE)
if(TARGET adstore)
  get_target_property(adstore_sources adstore SOURCES)
  foreach(src IN LISTS adstore_sources)
    if(src MATCHES "unpack\\.c$")
      set(unpack_in_adstore TRUE)
    endif()
  endforeach()
endif()
if(unpack_in_adstore)
  agentd_unit_test(unpack_test adstore adcommon PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
else()
  agentd_unit_test(unpack_test adcommon PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
  target_sources(unpack_test PRIVATE ${CMAKE_SOURCE_DIR}/store/unpack.c)
endif()
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
  target_link_libraries(unpack_fuzz PRIVATE adcommon PkgConfig::LIBARCHIVE PkgConfig::OPENSSL)
endif()
