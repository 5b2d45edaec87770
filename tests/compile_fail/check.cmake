# SPDX-License-Identifier: MIT
# Run with cmake -P: compiles SOURCE and passes only if that fails with a
# diagnostic containing EXPECT (the message dogpile gives for the mistake).
execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only -I${INCLUDE_DIR} ${SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
string(FIND "${out}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${SOURCE} failed without saying \"${EXPECT}\":\n${out}")
endif()
message(STATUS "refused as expected: ${EXPECT}")
