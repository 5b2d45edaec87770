# SPDX-License-Identifier: MIT
# Run with cmake -P. Makes the Debian packages of the build in BINARY_DIR
# with scripts/package.sh --from (the same rules as a package.sh build),
# unpacks them into a scratch root (as dpkg would install them, without
# touching the system), checks what each holds and depends on, and builds and
# runs the consumer project against them, linked to the shared library and to
# the static one: with find_package and with pkg-config.
cmake_minimum_required(VERSION 3.20)

include(${CMAKE_CURRENT_LIST_DIR}/run.cmake)

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
run(bash ${SOURCE_DIR}/scripts/package.sh --from ${BINARY_DIR})
string(STRIP "${run_out}" debs)
string(REPLACE "\n" ";" debs "${debs}")
set(runtime_deb "")
set(dev_deb "")
foreach(deb IN LISTS debs)
  run(dpkg-deb -f ${deb} Package Depends Section)
  message(STATUS "${deb}:\n${run_out}")
  if(run_out MATCHES "Package: libdogpile-dev")
    set(dev_deb ${deb})
    if(NOT run_out MATCHES "libdogpile0\\.1 \\(= " OR NOT run_out MATCHES "libmemcached-dev")
      message(FATAL_ERROR "unexpected control fields of ${deb}:\n${run_out}")
    endif()
  elseif(run_out MATCHES "Package: libdogpile0\\.1")
    set(runtime_deb ${deb})
    if(NOT run_out MATCHES "libmemcached11" OR run_out MATCHES "-dev")
      message(FATAL_ERROR "unexpected control fields of ${deb}:\n${run_out}")
    endif()
  endif()
endforeach()
if(NOT runtime_deb OR NOT dev_deb)
  message(FATAL_ERROR "scripts/package.sh did not make libdogpile0.1 and libdogpile-dev: '${debs}'")
endif()

# What each holds: the runtime package the shared library alone (and its
# copyright), the -dev package the rest.
set(root ${WORK_DIR}/root)
run(dpkg-deb -c ${runtime_deb})
set(runtime_files "${run_out}")
if(NOT runtime_files MATCHES "libdogpile\\.so\\.0\\.1" OR runtime_files MATCHES "include/"
   OR runtime_files MATCHES "\\.a\n" OR NOT runtime_files MATCHES "doc/libdogpile0\\.1/copyright")
  message(FATAL_ERROR "libdogpile0.1 holds:\n${runtime_files}")
endif()
run(dpkg-deb -x ${runtime_deb} ${root})
run(dpkg-deb -x ${dev_deb} ${root})
foreach(f usr/include/dogpile/region.hpp usr/include/dogpile/codec/json.hpp
          usr/share/doc/libdogpile-dev/copyright)
  if(NOT EXISTS ${root}/${f})
    message(FATAL_ERROR "the packages lack ${f}")
  endif()
endforeach()
# Under /usr/lib or Debian's multiarch /usr/lib/<triplet>.
file(GLOB_RECURSE static_lib ${root}/usr/lib/libdogpile.a)
file(GLOB_RECURSE shared_lib ${root}/usr/lib/libdogpile.so)
file(GLOB_RECURSE config ${root}/usr/lib/dogpileConfig.cmake)
file(GLOB_RECURSE pc_file ${root}/usr/lib/dogpile.pc)
if(NOT static_lib OR NOT shared_lib OR NOT config OR NOT pc_file)
  message(FATAL_ERROR "the packages lack libdogpile.a, libdogpile.so, dogpileConfig.cmake or dogpile.pc")
endif()
list(GET shared_lib 0 shared_lib)
get_filename_component(libdir ${shared_lib} DIRECTORY)
run(objdump -p ${shared_lib})
if(NOT run_out MATCHES "SONAME +libdogpile\\.so\\.0\\.1\n")
  message(FATAL_ERROR "libdogpile.so has no soname libdogpile.so.0.1:\n${run_out}")
endif()
# The consumer runs against the unpacked shared library, not one installed.
set(ENV{LD_LIBRARY_PATH} ${libdir})

# find_package(dogpile) against the unpacked /usr: consumer links the shared
# library, consumer_static the static one (one compile, two links).
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/find-package
    -DCMAKE_PREFIX_PATH=${root}/usr -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DDOGPILE_BOTH=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/find-package -j 2)
foreach(exe consumer consumer_static)
  run(${WORK_DIR}/find-package/${exe})
  run(ldd ${WORK_DIR}/find-package/${exe})
  if(exe STREQUAL "consumer" AND NOT run_out MATCHES "libdogpile\\.so\\.0\\.1 => ${libdir}")
    message(FATAL_ERROR "the consumer does not use the packaged libdogpile.so.0.1:\n${run_out}")
  elseif(exe STREQUAL "consumer_static" AND run_out MATCHES "libdogpile")
    message(FATAL_ERROR "the static consumer needs libdogpile.so:\n${run_out}")
  endif()
endforeach()

# examples/hello, a project of its own, against the packages, on a memcached.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/hello -B ${WORK_DIR}/hello
    -DCMAKE_PREFIX_PATH=${root}/usr -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/hello -j 2)
run(bash ${SOURCE_DIR}/scripts/run-demo.sh ${WORK_DIR}/hello/hello)
if(NOT run_out MATCHES "16 requests for user 7, 1 load")
  message(FATAL_ERROR "examples/hello:\n${run_out}")
endif()

# pkg-config, as a Makefile would use the packages: dogpile (the shared
# library) and dogpile-static.
list(GET pc_file 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
run(pkg-config --cflags dogpile)
string(STRIP "${run_out}" cflags)
separate_arguments(cflags UNIX_COMMAND "${cflags}")
run(${CXX_COMPILER} -std=c++20 -c ${CONSUMER_SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer-pc.o
    ${cflags})
foreach(module dogpile dogpile-static)
  run(pkg-config --libs ${module})
  string(STRIP "${run_out}" libs)
  message(STATUS "pkg-config --libs ${module}: ${libs}")
  separate_arguments(libs UNIX_COMMAND "${libs}")
  run(${CXX_COMPILER} ${WORK_DIR}/consumer-pc.o -o ${WORK_DIR}/consumer-${module} ${libs})
  run(${WORK_DIR}/consumer-${module})
  message(STATUS "${run_out}")
endforeach()
