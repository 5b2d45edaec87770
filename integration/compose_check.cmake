# SPDX-License-Identifier: MIT
# Run with cmake -P: docker-compose.yml is valid (`docker-compose config`, from
# the Debian package: no container engine needed) and describes three
# memcached nodes and the service that runs the integration suite on them.
find_program(COMPOSE docker-compose)
if(NOT COMPOSE)
  message(FATAL_ERROR "docker-compose is not installed (scripts/setup.sh installs it)")
endif()
execute_process(COMMAND ${COMPOSE} -f ${COMPOSE_FILE} config --services
  RESULT_VARIABLE rc OUTPUT_VARIABLE services ERROR_VARIABLE errors)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "docker-compose config failed:\n${errors}")
endif()
foreach(service memcached1 memcached2 memcached3 tests)
  string(REGEX MATCH "(^|\n)${service}(\n|$)" found "${services}")
  if(NOT found)
    message(FATAL_ERROR "docker-compose.yml has no service '${service}':\n${services}")
  endif()
endforeach()
execute_process(COMMAND ${COMPOSE} -f ${COMPOSE_FILE} config
  RESULT_VARIABLE rc OUTPUT_VARIABLE resolved)
string(FIND "${resolved}" "DOGPILE_TEST_CLUSTER: memcached1:11211,memcached2:11211,memcached3:11211" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the tests service does not point DOGPILE_TEST_CLUSTER at the three nodes:\n${resolved}")
endif()
message(STATUS "docker-compose.yml: ${services}")
