# radix_attention_read_version(<header> <out_var>): sets <out_var> to "MAJOR.MINOR.PATCH" from
# the RADIX_ATTENTION_VERSION_* macros of <header> (include/radix_attention/version.hpp), the one
# place the version is written. Runs before project(), which takes the result.
function(radix_attention_read_version header out_var)
  file(STRINGS "${header}" lines
       REGEX "^#define RADIX_ATTENTION_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+ *$")
  set(parts)
  foreach(part IN ITEMS MAJOR MINOR PATCH)
    set(value "")
    foreach(line IN LISTS lines)
      if(line MATCHES "^#define RADIX_ATTENTION_VERSION_${part} +([0-9]+)")
        set(value "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    if(value STREQUAL "")
      message(FATAL_ERROR "radix_attention: ${header} has no '#define RADIX_ATTENTION_VERSION_${part} <number>'")
    endif()
    list(APPEND parts "${value}")
  endforeach()
  list(JOIN parts "." version)
  set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
