// vmm/base/crypto wraps OpenSSL: these check that the wrapping passes keys,
// lengths and outputs through correctly (published test vectors).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "net/tls_psk.hpp"
#include "vmm/base/crypto.hpp"
#include "vmm/base/hex.hpp"

using namespace vvmm;

namespace {

std::vector<uint8_t> bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::vector<uint8_t> unhex(std::string_view hex) { return from_hex(hex).value(); }

std::string hex(std::span<const uint8_t> data) { return to_hex(data); }

}  // namespace

TEST_CASE("sha256: FIPS 180-4 examples")
{
    CHECK(hex(sha256(bytes("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex(sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("hmac_sha256: RFC 4231 test cases 1, 2 and 6 (a key longer than a block)")
{
    CHECK(hex(hmac_sha256(std::vector<uint8_t>(20, 0x0b), bytes("Hi There"))) ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    CHECK(hex(hmac_sha256(bytes("Jefe"), bytes("what do ya want for nothing?"))) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    CHECK(hex(hmac_sha256(std::vector<uint8_t>(131, 0xaa),
                          bytes("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    CHECK(hmac_sha256({}, bytes("x")) != hmac_sha256(bytes("k"), bytes("x")));
}

TEST_CASE("hkdf_sha256: RFC 5869 test cases 1 and 3")
{
    std::vector<uint8_t> okm(42);
    hkdf_sha256(std::vector<uint8_t>(22, 0x0b), unhex("000102030405060708090a0b0c"), unhex("f0f1f2f3f4f5f6f7f8f9"), okm);
    CHECK(hex(okm) == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
    hkdf_sha256(std::vector<uint8_t>(22, 0x0b), {}, {}, okm);
    CHECK(hex(okm) == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST_CASE("equal_constant_time")
{
    const std::vector<uint8_t> a(16, 7);
    std::vector<uint8_t> b = a;
    CHECK(equal_constant_time(a, b));
    for (size_t i = 0; i < b.size(); ++i) {
        b = a;
        b[i] ^= 1;
        CHECK_FALSE(equal_constant_time(a, b));
    }
    CHECK_FALSE(equal_constant_time(a, std::span(a).first(15)));
    CHECK(equal_constant_time({}, {}));
}

TEST_CASE("cluster PSK: bound to the secret and the cluster name")
{
    const auto psk = net::derive_cluster_psk(bytes("secret"), "lab");
    CHECK(psk.identity == "vvmm-v3/lab");
    CHECK(net::derive_cluster_psk(bytes("secret"), "lab").key == psk.key);
    CHECK(net::derive_cluster_psk(bytes("secreT"), "lab").key != psk.key);
    CHECK(net::derive_cluster_psk(bytes("secret"), "lab2").key != psk.key);
    CHECK(net::derive_cluster_psk({}, "lab").key != psk.key);
}

TEST_CASE("hex: round trip; odd length, upper case and non-digits refused")
{
    const std::vector<uint8_t> b = {0x00, 0x7f, 0x80, 0xff};
    CHECK(to_hex(b) == "007f80ff");
    CHECK(from_hex("007f80ff").value() == b);
    CHECK(from_hex("").value().empty());
    CHECK(!from_hex("abc"));
    CHECK(!from_hex("AB"));
    CHECK(!from_hex("0g"));
}
