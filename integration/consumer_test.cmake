# SPDX-License-Identifier: MIT
# Run with cmake -P. Installs the dogpile build into a scratch prefix and
# builds the consumer project three ways: find_package against that prefix,
# add_subdirectory of the source tree, and a plain compile with pkg-config.
cmake_minimum_required(VERSION 3.20)

include(${CMAKE_CURRENT_LIST_DIR}/run.cmake)

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

run(${CMAKE_COMMAND} --install ${DOGPILE_BINARY_DIR} --prefix ${prefix})

# 1. find_package(dogpile) against the installed tree.
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/find-package
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/find-package -j 2)
run(${WORK_DIR}/find-package/consumer)

# 2. add_subdirectory(dogpile) from the source tree. Unoptimized and in one
# unity batch per 8 sources: it builds the library again, and what is checked
# is that it builds and links.
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/subdirectory
    -DDOGPILE_SOURCE_DIR=${DOGPILE_SOURCE_DIR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_BUILD_TYPE= -DCMAKE_UNITY_BUILD=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/subdirectory -j 2)
run(${WORK_DIR}/subdirectory/consumer)

# 3. pkg-config, the way a Makefile would use the installed dogpile-static.pc.
file(GLOB_RECURSE pc_file ${prefix}/*/dogpile.pc)
if(NOT pc_file)
  message(FATAL_ERROR "dogpile.pc was not installed under ${prefix}")
endif()
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
execute_process(COMMAND pkg-config --cflags --libs dogpile-static
  RESULT_VARIABLE rc OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config could not resolve dogpile-static.pc")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
run(${CXX_COMPILER} -std=c++20 ${CONSUMER_SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer-pc ${flags})
run(${WORK_DIR}/consumer-pc)
