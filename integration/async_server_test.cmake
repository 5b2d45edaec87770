# SPDX-License-Identifier: MIT
# Run with cmake -P. Installs the dogpile build into a scratch prefix and
# builds examples/async_server (asio, a coroutine handler and creator)
# against it with find_package, unoptimized: it builds, links, and serves
# 500 clients of its own over TCP with one load, on a memcached started for
# it (scripts/run-demo.sh). (Apart from consumer_test.cmake, so that
# the two run side by side.)
cmake_minimum_required(VERSION 3.20)

include(${CMAKE_CURRENT_LIST_DIR}/run.cmake)

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${DOGPILE_BINARY_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${DOGPILE_SOURCE_DIR}/examples/async_server -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)
run(bash ${DOGPILE_SOURCE_DIR}/scripts/run-demo.sh ${WORK_DIR}/build/async_server --clients 500)
if(NOT run_out MATCHES "500 requests for user 7 over TCP, 500 right, 1 load")
  message(FATAL_ERROR "async_server did not serve its clients with one load:\n${run_out}")
endif()
