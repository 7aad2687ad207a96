#pragma once
/// @file
/// The library's version. The top-level CMakeLists.txt reads MAJOR / MINOR / PATCH from this
/// file into project(VERSION), so the installed package's version and these macros are one
/// number, kept in one place. Plain C++17 / C preprocessor.

/// Incremented for changes that break the API.
#define RADIX_ATTENTION_VERSION_MAJOR 0
/// Incremented for new features (while MAJOR is 0, for API breaks too).
#define RADIX_ATTENTION_VERSION_MINOR 1
/// Incremented for fixes.
#define RADIX_ATTENTION_VERSION_PATCH 0

#define RADIX_ATTENTION_DETAIL_STRINGIFY(x) #x
#define RADIX_ATTENTION_DETAIL_TO_STRING(x) RADIX_ATTENTION_DETAIL_STRINGIFY(x)

/// "MAJOR.MINOR.PATCH", built from the three numbers above so it cannot drift from them.
// clang-format off
#define RADIX_ATTENTION_VERSION_STRING                                \
  RADIX_ATTENTION_DETAIL_TO_STRING(RADIX_ATTENTION_VERSION_MAJOR) "." \
  RADIX_ATTENTION_DETAIL_TO_STRING(RADIX_ATTENTION_VERSION_MINOR) "." \
  RADIX_ATTENTION_DETAIL_TO_STRING(RADIX_ATTENTION_VERSION_PATCH)
// clang-format on

/// MAJOR * 10000 + MINOR * 100 + PATCH, for `#if RADIX_ATTENTION_VERSION >= 200` style checks.
#define RADIX_ATTENTION_VERSION                                                  \
  (RADIX_ATTENTION_VERSION_MAJOR * 10000 + RADIX_ATTENTION_VERSION_MINOR * 100 + \
   RADIX_ATTENTION_VERSION_PATCH)
