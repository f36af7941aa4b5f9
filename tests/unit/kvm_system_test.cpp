#include <doctest/doctest.h>

#include "vmm/kvm_system.hpp"

TEST_CASE("a host without /dev/kvm gets a clear error")
{
    auto k = vvmm::vmm::KvmSystem::open("/nonexistent/kvm");
    REQUIRE_FALSE(k.ok());
    CHECK(k.error().message().find("does not exist: this host has no KVM") != std::string::npos);
}

TEST_CASE("a device that is not KVM is refused")
{
    auto k = vvmm::vmm::KvmSystem::open("/dev/null");
    REQUIRE_FALSE(k.ok());
    CHECK(k.error().message().find("KVM API version") != std::string::npos);
}
