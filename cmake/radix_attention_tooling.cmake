# Developer tooling of the top-level project (never part of a consumer's build).

# `cmake --build <dir> --target docs`: the API reference (Doxygen) of the public headers into
# <dir>/docs/html. The Doxyfile in the repository root also works on its own (`doxygen
# Doxyfile` writes build-docs/); this target only points the output into the build directory and
# stamps the project's version. Defined only where Doxygen is found.
find_package(Doxygen QUIET)
if(DOXYGEN_FOUND)
  file(CONFIGURE OUTPUT ${PROJECT_BINARY_DIR}/Doxyfile CONTENT
"@INCLUDE = ${PROJECT_SOURCE_DIR}/Doxyfile
OUTPUT_DIRECTORY = ${PROJECT_BINARY_DIR}/docs
PROJECT_NUMBER = ${PROJECT_VERSION}
")
  add_custom_target(docs
    COMMAND Doxygen::doxygen ${PROJECT_BINARY_DIR}/Doxyfile
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}  # the Doxyfile's paths are relative to the root
    COMMENT "Doxygen: API reference in ${PROJECT_BINARY_DIR}/docs/html"
    VERBATIM)
else()
  message(STATUS "radix_attention: Doxygen not found; no 'docs' target")
endif()
