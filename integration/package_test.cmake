# Run with cmake -P. Makes the Debian package of the build in BINARY_DIR with
# scripts/package.sh --from (the same rules as a package.sh build), unpacks it into a scratch root (as dpkg would install it, without touching
# the system), checks what it holds and what it depends on, and builds and
# runs the consumer project against it: find_package and pkg-config.
cmake_minimum_required(VERSION 3.20)

include(${CMAKE_CURRENT_LIST_DIR}/run.cmake)

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
run(bash ${SOURCE_DIR}/scripts/package.sh --from ${BINARY_DIR})
string(STRIP "${run_out}" deb)
if(NOT EXISTS "${deb}")
  message(FATAL_ERROR "scripts/package.sh printed no package: '${deb}'")
endif()
message(STATUS "package: ${deb}")

run(dpkg-deb -f ${deb} Package Depends)
message(STATUS "${run_out}")
if(NOT run_out MATCHES "Package: libdogpile-dev" OR NOT run_out MATCHES "libmemcached-dev")
  message(FATAL_ERROR "unexpected control fields:\n${run_out}")
endif()

set(root ${WORK_DIR}/root)
run(dpkg-deb -x ${deb} ${root})
foreach(f usr/include/dogpile/region.hpp usr/include/dogpile/codec/json.hpp)
  if(NOT EXISTS ${root}/${f})
    message(FATAL_ERROR "the package lacks ${f}")
  endif()
endforeach()
# Under /usr/lib or Debian's multiarch /usr/lib/<triplet>.
file(GLOB_RECURSE lib ${root}/usr/lib/libdogpile.a)
file(GLOB_RECURSE config ${root}/usr/lib/dogpileConfig.cmake)
file(GLOB_RECURSE pc_file ${root}/usr/lib/dogpile.pc)
if(NOT lib OR NOT config OR NOT pc_file)
  message(FATAL_ERROR "the package lacks libdogpile.a, dogpileConfig.cmake or dogpile.pc")
endif()

# find_package(dogpile) against the unpacked /usr.
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/consumer
    -DCMAKE_PREFIX_PATH=${root}/usr -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer -j 2)
run(${WORK_DIR}/consumer/consumer)
message(STATUS "${run_out}")

# pkg-config, as a Makefile would use the package's dogpile.pc.
list(GET pc_file 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
run(pkg-config --cflags --libs --static dogpile)
string(STRIP "${run_out}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(${CXX_COMPILER} -std=c++20 ${CONSUMER_SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer-pc ${flags})
run(${WORK_DIR}/consumer-pc)
message(STATUS "${run_out}")
