# SPDX-License-Identifier: MIT
# run(COMMAND ARGS...): runs a command for the cmake -P test scripts; fails
# the script with its output if it fails, else prints its output and leaves
# its standard output in run_out.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  message(STATUS "${out}${err}")
  set(run_out "${out}" PARENT_SCOPE)
endfunction()
