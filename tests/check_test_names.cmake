# A test of the tests: no doctest case name may hold ';'. doctest_discover_tests passes names
# through CMake lists, which split on ';', so such a case never runs under ctest while its
# fragments "pass". Run as: cmake -DDIR=<tests folder> -P check_test_names.cmake
file(GLOB_RECURSE sources "${DIR}/*.cpp")
set(bad "")
foreach(source IN LISTS sources)
  file(STRINGS "${source}" lines REGEX "TEST_CASE\\(\"[^\"]*;")
  foreach(line IN LISTS lines)
    string(APPEND bad "\n  ${source}: ${line}")
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "test case names must not contain ';' (ctest would never run them):${bad}")
endif()
