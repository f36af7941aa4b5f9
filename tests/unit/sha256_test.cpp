#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "net/sha256.hpp"

using namespace vvmm::net;

namespace {

std::vector<uint8_t> bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::vector<uint8_t> unhex(std::string_view hex)
{
    std::vector<uint8_t> out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    return out;
}

std::string hex(std::span<const uint8_t> data)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (uint8_t b : data) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

std::vector<uint8_t> repeated(uint8_t byte, size_t n) { return std::vector<uint8_t>(n, byte); }

}  // namespace

TEST_CASE("sha256: FIPS 180-4 examples")
{
    CHECK(hex(sha256(bytes("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex(sha256(bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    CHECK(hex(sha256(repeated('a', 1000000))) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    CHECK(hex(sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("sha256: lengths around the padding boundaries")
{
    // Reference digests from Python's hashlib for 55, 56, 63, 64 and 65 bytes of 'x'.
    CHECK(hex(sha256(repeated('x', 55))) == "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
    CHECK(hex(sha256(repeated('x', 56))) == "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
    CHECK(hex(sha256(repeated('x', 63))) == "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2");
    CHECK(hex(sha256(repeated('x', 64))) == "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
    CHECK(hex(sha256(repeated('x', 65))) == "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9");
}

TEST_CASE("sha256: incremental updates match one call, whatever the split")
{
    std::vector<uint8_t> data(300);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
    const Sha256Digest whole = sha256(data);
    for (size_t chunk : {size_t{1}, size_t{3}, size_t{63}, size_t{64}, size_t{65}, size_t{127}, size_t{300}}) {
        Sha256 h;
        for (size_t off = 0; off < data.size(); off += chunk)
            h.update(std::span(data).subspan(off, std::min(chunk, data.size() - off)));
        CHECK_MESSAGE(h.finish() == whole, chunk);
    }
    // finish() resets: the same object hashes the next message from scratch.
    Sha256 h;
    h.update(std::string_view("garbage"));
    (void)h.finish();
    h.update(std::string_view("abc"));
    CHECK(h.finish() == sha256(bytes("abc")));
}

TEST_CASE("hmac_sha256: RFC 4231 test cases")
{
    struct Case {
        std::vector<uint8_t> key;
        std::vector<uint8_t> data;
        std::string mac;
    };
    const std::vector<Case> cases = {
        {repeated(0x0b, 20), bytes("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {bytes("Jefe"), bytes("what do ya want for nothing?"),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {repeated(0xaa, 20), repeated(0xdd, 50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), repeated(0xcd, 50),
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {repeated(0xaa, 131), bytes("Test Using Larger Than Block-Size Key - Hash Key First"),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {repeated(0xaa, 131),
         bytes("This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
               "be hashed before being used by the HMAC algorithm."),
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < cases.size(); ++i)
        CHECK_MESSAGE(hex(hmac_sha256(cases[i].key, cases[i].data)) == cases[i].mac, "case ", i < 4 ? i + 1 : i + 2);

    // Case 5: the MAC truncated to 128 bits.
    const auto tag = hmac_sha256(repeated(0x0c, 20), bytes("Test With Truncation"));
    CHECK(hex(std::span(tag).first(16)) == "a3b6167473100ee06e0c796c2955552b");
}

TEST_CASE("hmac_sha256: a key of exactly one block is used as is, one byte more is hashed")
{
    const auto msg = bytes("m");
    const auto k64 = repeated(0x42, 64);
    const auto k65 = repeated(0x42, 65);
    const auto hashed = sha256(k65);
    CHECK(hmac_sha256(k65, msg) == hmac_sha256(hashed, msg));
    CHECK(hmac_sha256(k64, msg) != hmac_sha256(sha256(k64), msg));
    // Trailing zero bytes of a short key are padding: the same key.
    auto k20 = repeated(0x42, 20);
    auto k21 = k20;
    k21.push_back(0);
    CHECK(hmac_sha256(k20, msg) == hmac_sha256(k21, msg));
}

TEST_CASE("equal_constant_time")
{
    const auto a = bytes("0123456789abcdef");
    auto b = a;
    CHECK(equal_constant_time(a, b));
    for (size_t i = 0; i < b.size(); ++i) {
        b = a;
        b[i] ^= 0x80;
        CHECK_FALSE(equal_constant_time(a, b));
    }
    CHECK_FALSE(equal_constant_time(a, std::span(a).first(15)));
    CHECK(equal_constant_time({}, {}));
}
