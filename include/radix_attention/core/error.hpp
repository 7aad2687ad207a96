#pragma once
/// @file
/// The library's error model: every failure is an exception derived from
/// radix_attention::Error whose message names the argument and the offending value.
/// Plain C++17: host-only users include this without CUDA.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace radix_attention {

/// @brief Base of every exception the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief An argument violates a documented precondition (the message names it and its value).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// @brief A fixed-capacity resource (the KV block pool, a workspace) cannot satisfy a request.
class CapacityError : public Error {
 public:
  using Error::Error;
};

/// @brief An operation is not valid in the object's current state
/// (unlocking an unlocked node, appending to a finished sequence, a stale plan).
class StateError : public Error {
 public:
  using Error::Error;
};

/// @brief A CUDA runtime call failed; the message carries file:line, the error name and text.
class CudaError : public Error {
 public:
  using Error::Error;
};

/// Marks the out-of-line throw paths of expects / expects_that: the checks run on every launch
/// (a few dozen per call), so the compiler keeps only a compare and a not-taken branch inline.
#if defined(__GNUC__) || defined(__clang__)
#define RADIX_ATTENTION_COLD __attribute__((noinline, cold))
#else
#define RADIX_ATTENTION_COLD
#endif

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <class Exception, class... Parts>
[[noreturn]] RADIX_ATTENTION_COLD void throw_concat(const Parts&... parts) {
  throw Exception(concat("radix_attention: ", parts...));
}

}  // namespace detail

/// @brief Throws `Exception` with the message
///   "radix_attention: <name> = <value>: <requirement>"
/// unless `condition` holds. The one helper every public function uses to check its
/// preconditions, so messages look the same everywhere.
template <class Exception = InvalidArgument, class Value>
void expects(bool condition, const char* name, const Value& value, const char* requirement) {
  if (!condition) detail::throw_concat<Exception>(name, " = ", value, ": ", requirement);
}

/// @brief Throws `Exception` with "radix_attention: <message parts...>" unless `condition` holds;
/// for checks that relate several values.
template <class Exception = InvalidArgument, class... Parts>
void expects_that(bool condition, Parts&&... message) {
  if (!condition) detail::throw_concat<Exception>(message...);
}

}  // namespace radix_attention
