# SPDX-License-Identifier: MIT
# Run with cmake -P. Installs the dogpile build into a scratch prefix and
# builds the consumer project two ways: find_package against that prefix,
# and add_subdirectory of the source tree. (pkg-config, and the static
# library through find_package, are the package test's.)
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

