# SPDX-License-Identifier: MIT
# Run with cmake -P: compiles SOURCE and passes only if that fails, its first
# error saying EXPECT (the message dogpile gives for the mistake), and the
# output holding EXPECT_ALSO if given (e.g. the note naming the type).
execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only -I${INCLUDE_DIR} ${SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
string(REGEX MATCH "error: [^\n]*" first_error "${out}")
string(FIND "${first_error}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${SOURCE}: the first error does not say \"${EXPECT}\":\n${out}")
endif()
if(EXPECT_ALSO)
  string(FIND "${out}" "${EXPECT_ALSO}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${SOURCE}: the output does not say \"${EXPECT_ALSO}\":\n${out}")
  endif()
endif()
message(STATUS "refused as expected, first: ${first_error}")
