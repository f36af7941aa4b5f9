// Errors are values: every fallible function returns Result<T>.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace vvmm {

// What failed and why, in one human-readable line.
class Error {
public:
    explicit Error(std::string message) : message_(std::move(message)) {}
    const std::string& message() const { return message_; }
    // Prefix context as errors travel up: "loading kernel: not a bzImage".
    Error context(const std::string& what) const { return Error(what + ": " + message_); }

private:
    std::string message_;
};

inline Error errno_error(const std::string& what, int err = errno)
{
    return Error(what + ": " + std::strerror(err));
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(std::move(error)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    const T& value() const& { return std::get<0>(v_); }
    const Error& error() const { return std::get<1>(v_); }
    T* operator->() { return &value(); }
    T& operator*() { return value(); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return error_; }

private:
    Error error_{""};
    bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace vvmm

// Pass an error up; on success evaluate to nothing (statement form).
#define VVMM_CAT2(a, b) a##b
#define VVMM_CAT(a, b) VVMM_CAT2(a, b)
#define TRY(expr)                                                  \
    do {                                                           \
        auto&& vvmm_try_r = (expr);                                \
        if (!vvmm_try_r.ok()) return std::move(vvmm_try_r.error()); \
    } while (0)
// Bind the value of a Result<T> to a new variable or pass its error up.
#define TRY_ASSIGN(decl, expr) TRY_ASSIGN_IMPL(VVMM_CAT(vvmm_r_, __LINE__), decl, expr)
#define TRY_ASSIGN_IMPL(tmp, decl, expr)      \
    auto tmp = (expr);                        \
    if (!tmp.ok()) return tmp.error();        \
    decl = std::move(tmp).value()
