"""Known-answer tests for the primitives: crypto.py, xchacha.py and keys.py."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.wireguard.constants import (
    CONSTRUCTION,
    IDENTIFIER,
    TAI64_BASE,
    TIMESTAMP_WHITENING_NS,
)
from actors.wireguard.crypto import (
    AeadError,
    CryptoError,
    aead_decrypt,
    aead_encrypt,
    aead_nonce,
    dh,
    hash_,
    hmac,
    kdf1,
    kdf2,
    kdf3,
    mac,
    public_key,
    tai64n,
    tai64n_to_ns,
)
from actors.wireguard.keys import (
    KeyFormatError,
    decode_hex_key,
    decode_key,
    encode_key,
    generate_private_key,
)
from actors.wireguard.xchacha import (
    hchacha20,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
)

h = bytes.fromhex

# --- KDF (wireguard-go device/kdf_test.go) ---------------------------------------------------

KDF_VECTORS = [
    (
        "746573742d6b6579",
        "746573742d696e707574",
        "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
        "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
        "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    ),
    (
        "776972656775617264",
        "776972656775617264",
        "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
        "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
        "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    ),
    (
        "",
        "",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
]


@pytest.mark.parametrize(("key", "data", "t0", "t1", "t2"), KDF_VECTORS)
def test_kdf_vectors(key: str, data: str, t0: str, t1: str, t2: str) -> None:
    k, d = h(key), h(data)
    assert kdf3(k, d) == (h(t0), h(t1), h(t2))
    assert kdf2(k, d) == (h(t0), h(t1))
    assert kdf1(k, d) == h(t0)


def test_noise_initial_chaining_key_and_hash() -> None:
    assert CONSTRUCTION == b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    assert IDENTIFIER == b"WireGuard v1 zx2c4 Jason@zx2c4.com"
    ck = hash_(CONSTRUCTION)
    assert ck == h("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
    assert hash_(ck, IDENTIFIER) == h(
        "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"
    )


def test_hash_concatenates_parts() -> None:
    assert hash_(b"ab", b"cd") == hash_(b"abcd") == hashlib.blake2s(b"abcd").digest()
    assert hash_() == hashlib.blake2s(b"").digest()
    assert len(hash_(b"x")) == 32


# --- MAC and HMAC ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "data"),
    [(bytes(32), b""), (b"\x01" * 32, b"hello"), (b"k", b"x" * 1000), (bytes(range(32)), b"\xff")],
)
def test_mac_is_keyed_blake2s_128(key: bytes, data: bytes) -> None:
    out = mac(key, data)
    assert len(out) == 16
    assert out == hashlib.blake2s(data, key=key, digest_size=16).digest()
    # keyed BLAKE2s, not a truncated HMAC
    assert out != hmac(key, data)[:16]


def _reference_hmac_blake2s(key: bytes, data: bytes) -> bytes:
    """RFC 2104 written out by hand with BLAKE2s-256 (block size 64)."""
    block = 64
    if len(key) > block:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(block, b"\x00")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = hashlib.blake2s(ipad + data).digest()
    return hashlib.blake2s(opad + inner).digest()


@pytest.mark.parametrize(
    ("key", "data"),
    [
        (b"", b""),
        (b"key", b"The quick brown fox jumps over the lazy dog"),
        (bytes(32), b"\x01"),
        (bytes(range(64)), b"exactly one block of key"),
        (bytes(range(65)), b"one byte over a block"),
        (b"\xaa" * 131, b"\xdd" * 50),
    ],
)
def test_hmac_matches_rfc2104_construction(key: bytes, data: bytes) -> None:
    out = hmac(key, data)
    assert len(out) == 32
    assert out == _reference_hmac_blake2s(key, data)


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_hmac_matches_reference_random(key: bytes, data: bytes) -> None:
    assert hmac(key, data) == _reference_hmac_blake2s(key, data)


# --- HChaCha20 / XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) ---------------------------------


def test_hchacha20_vector() -> None:
    out = hchacha20(bytes(range(32)), h("000000090000004a0000000031415927"))
    assert out == h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")


def test_hchacha20_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        hchacha20(bytes(31), bytes(16))
    with pytest.raises(ValueError):
        hchacha20(bytes(32), bytes(15))
    with pytest.raises(ValueError):
        hchacha20(bytes(32), bytes(24))


XKEY = bytes(range(0x80, 0xA0))
XNONCE = h("404142434445464748494a4b4c4d4e4f5051525354555657")
XAAD = h("50515253c0c1c2c3c4c5c6c7")
XPLAIN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
XCIPHER = h(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda"
    "7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b23835"
    "65d3fff921f9664c97637da9768812f615c68b13b52e"
)
XTAG = h("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_vector_encrypt() -> None:
    assert len(XCIPHER) == len(XPLAIN)
    assert xchacha20poly1305_encrypt(XKEY, XNONCE, XPLAIN, XAAD) == XCIPHER + XTAG


def test_xchacha20poly1305_vector_decrypt() -> None:
    assert xchacha20poly1305_decrypt(XKEY, XNONCE, XCIPHER + XTAG, XAAD) == XPLAIN


@given(st.binary(max_size=100), st.binary(max_size=40))
def test_xchacha20poly1305_round_trip(plaintext: bytes, ad: bytes) -> None:
    sealed = xchacha20poly1305_encrypt(XKEY, XNONCE, plaintext, ad)
    assert len(sealed) == len(plaintext) + 16
    assert xchacha20poly1305_decrypt(XKEY, XNONCE, sealed, ad) == plaintext


@pytest.mark.parametrize("where", ["ciphertext", "tag", "aad"])
@pytest.mark.parametrize("bit", [0, 7])
def test_xchacha20poly1305_tamper(where: str, bit: int) -> None:
    sealed = bytearray(XCIPHER + XTAG)
    aad = bytearray(XAAD)
    if where == "ciphertext":
        sealed[5] ^= 1 << bit
    elif where == "tag":
        sealed[-1] ^= 1 << bit
    else:
        aad[0] ^= 1 << bit
    with pytest.raises(AeadError):
        xchacha20poly1305_decrypt(XKEY, XNONCE, bytes(sealed), bytes(aad))


def test_xchacha20poly1305_wrong_key_or_nonce_value() -> None:
    sealed = XCIPHER + XTAG
    with pytest.raises(AeadError):
        xchacha20poly1305_decrypt(bytes(32), XNONCE, sealed, XAAD)
    other_nonce = XNONCE[:-1] + b"\x00"  # differs only in the part that is not HChaCha20 input
    with pytest.raises(AeadError):
        xchacha20poly1305_decrypt(XKEY, other_nonce, sealed, XAAD)
    other_nonce = b"\x00" + XNONCE[1:]  # differs only in the HChaCha20 input
    with pytest.raises(AeadError):
        xchacha20poly1305_decrypt(XKEY, other_nonce, sealed, XAAD)


@pytest.mark.parametrize("nonce_len", [0, 12, 16, 23, 25])
def test_xchacha20poly1305_bad_nonce_size(nonce_len: int) -> None:
    with pytest.raises(ValueError):
        xchacha20poly1305_encrypt(XKEY, bytes(nonce_len), b"x", b"")
    with pytest.raises(ValueError):
        xchacha20poly1305_decrypt(XKEY, bytes(nonce_len), bytes(17), b"")


@pytest.mark.parametrize("key_len", [0, 16, 31, 33])
def test_xchacha20poly1305_bad_key_size(key_len: int) -> None:
    with pytest.raises(ValueError):
        xchacha20poly1305_encrypt(bytes(key_len), XNONCE, b"x", b"")
    with pytest.raises(ValueError):
        xchacha20poly1305_decrypt(bytes(key_len), XNONCE, bytes(17), b"")


def test_aead_error_is_crypto_error() -> None:
    assert issubclass(AeadError, CryptoError)


# --- AEAD with WireGuard's nonce ---------------------------------------------------------------


def test_aead_nonce_layout() -> None:
    assert aead_nonce(1) == bytes(4) + (1).to_bytes(8, "little")
    assert aead_nonce(0) == bytes(12)
    assert aead_nonce(2**64 - 1) == bytes(4) + b"\xff" * 8
    assert aead_nonce(0x0102030405060708) == bytes(4) + bytes([8, 7, 6, 5, 4, 3, 2, 1])


def test_aead_matches_chacha20poly1305_with_nonce() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = bytes(range(32))
    sealed = aead_encrypt(key, 7, b"payload", b"ad")
    assert sealed == ChaCha20Poly1305(key).encrypt(aead_nonce(7), b"payload", b"ad")


@given(st.integers(0, 2**64 - 1), st.binary(max_size=100), st.binary(max_size=40))
def test_aead_round_trip(counter: int, plaintext: bytes, ad: bytes) -> None:
    key = b"\x42" * 32
    sealed = aead_encrypt(key, counter, plaintext, ad)
    assert len(sealed) == len(plaintext) + 16
    assert aead_decrypt(key, counter, sealed, ad) == plaintext


def test_aead_tamper() -> None:
    key = b"\x42" * 32
    sealed = aead_encrypt(key, 5, b"secret data", b"header")
    assert aead_decrypt(key, 5, sealed, b"header") == b"secret data"
    for i in (0, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(AeadError):
            aead_decrypt(key, 5, bytes(bad), b"header")
    with pytest.raises(AeadError):
        aead_decrypt(key, 6, sealed, b"header")
    with pytest.raises(AeadError):
        aead_decrypt(key, 5, sealed, b"headeR")
    with pytest.raises(AeadError):
        aead_decrypt(b"\x43" * 32, 5, sealed, b"header")
    with pytest.raises(AeadError):
        aead_decrypt(key, 5, sealed[:-1], b"header")


def test_aead_empty_plaintext_is_just_a_tag() -> None:
    key = bytes(32)
    sealed = aead_encrypt(key, 0, b"", b"")
    assert len(sealed) == 16
    assert aead_decrypt(key, 0, sealed, b"") == b""


# --- TAI64N ------------------------------------------------------------------------------------


def test_tai64n_epoch() -> None:
    assert TAI64_BASE == 2**62 + 10
    assert TIMESTAMP_WHITENING_NS == 2**24
    assert tai64n(0) == (2**62 + 10).to_bytes(8, "big") + bytes(4)


def test_tai64n_known_time() -> None:
    # 1_700_003_840 s is a multiple of 2**15 s, so its nanosecond count is a multiple of 2**24:
    # whitening leaves it alone whichever way it is done
    label = tai64n(1_700_003_840 * 10**9)
    assert len(label) == 12
    seconds, nanos = struct.unpack(">QI", label)
    assert seconds == 2**62 + 10 + 1_700_003_840
    assert nanos == 0


@pytest.mark.parametrize(
    "ns",
    [1_700_000_000 * 10**9, 1_500_000_000, 1_700_000_000 * 10**9 + 999_999_999, 10**9],
)
def test_tai64n_nanos_field_whitened_like_wireguard_go(ns: int) -> None:
    seconds, nanos = struct.unpack(">QI", tai64n(ns))
    assert seconds == TAI64_BASE + ns // 10**9
    assert nanos % TIMESTAMP_WHITENING_NS == 0
    assert nanos == (ns % 10**9) // TIMESTAMP_WHITENING_NS * TIMESTAMP_WHITENING_NS


def test_tai64n_whitening() -> None:
    # 1.5 s + 123 ns: rounded down by less than one whitening unit
    ns = 1_500_000_123
    seconds, nanos = struct.unpack(">QI", tai64n(ns))
    assert seconds == TAI64_BASE + 1
    assert 500_000_123 - TIMESTAMP_WHITENING_NS < nanos < 500_000_123
    # within one whitening unit (inside one second) the label does not change
    base = 10 * TIMESTAMP_WHITENING_NS
    assert tai64n(base) == tai64n(base + 1) == tai64n(base + TIMESTAMP_WHITENING_NS - 1)
    assert tai64n(base) < tai64n(base + TIMESTAMP_WHITENING_NS)
    assert tai64n_to_ns(tai64n(base + 12345)) == base


def test_tai64n_whitening_in_nanos_field() -> None:
    # whole seconds that are a multiple of 2**24 ns: the nanos field itself is whitened
    ns = 2**24 * 10**9 + 999_999_999
    seconds, nanos = struct.unpack(">QI", tai64n(ns))
    assert seconds == TAI64_BASE + 2**24
    assert nanos % TIMESTAMP_WHITENING_NS == 0
    assert nanos == (999_999_999 // 2**24) * 2**24


@given(st.integers(0, 2**62))
def test_tai64n_round_trip_within_one_whitening_unit(ns: int) -> None:
    label = tai64n(ns)
    seconds, nanos = struct.unpack(">QI", label)
    assert nanos < 10**9
    back = tai64n_to_ns(label)
    assert back == (seconds - TAI64_BASE) * 10**9 + nanos
    # rounded down, by less than one whitening unit: no finer clock than 2**24 ns leaks
    assert 0 <= ns - back < TIMESTAMP_WHITENING_NS
    assert tai64n(back) == label
    assert nanos % TIMESTAMP_WHITENING_NS == 0  # the nanoseconds field itself is whitened


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_tai64n_monotonic(a: int, b: int) -> None:
    a, b = min(a, b), max(a, b)
    assert tai64n(a) <= tai64n(b)


@given(st.integers(0, 10**12), st.integers(0, 10**10))
def test_tai64n_monotonic_near(a: int, d: int) -> None:
    assert tai64n(a) <= tai64n(a + d)
    if d >= 10**9:
        assert tai64n(a) < tai64n(a + d)


# --- X25519 (RFC 7748 section 6.1) ------------------------------------------------------------

ALICE_PRIV = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748() -> None:
    assert public_key(ALICE_PRIV) == ALICE_PUB
    assert public_key(BOB_PRIV) == BOB_PUB
    assert dh(ALICE_PRIV, BOB_PUB) == SHARED
    assert dh(BOB_PRIV, ALICE_PUB) == SHARED


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),  # zero
        (1).to_bytes(32, "little"),  # the identity (order 1)
        # a point of order 8
        h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_dh_low_order_point_raises(point: bytes) -> None:
    with pytest.raises(CryptoError):
        dh(ALICE_PRIV, point)


# --- keys.py -----------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_key_base64_round_trip(key: bytes) -> None:
    text = encode_key(key)
    assert len(text) == 44
    assert text.endswith("=")
    assert decode_key(text) == key


def test_decode_key_known() -> None:
    assert decode_key("A" * 43 + "=") == bytes(32)
    assert encode_key(ALICE_PUB) == base64.b64encode(ALICE_PUB).decode()
    assert decode_key(base64.b64encode(ALICE_PUB).decode()) == ALICE_PUB


SECRET_TEXT = base64.b64encode(b"\x5a" * 32).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        SECRET_TEXT[:-2] + "=",  # 43 characters
        SECRET_TEXT[:-1] + "A=",  # 45 characters
        base64.b64encode(b"\x5a" * 31).decode(),  # 31-byte key, "=="-padded
        base64.b64encode(b"\x5a" * 33).decode(),  # 33 bytes, no padding
        SECRET_TEXT[:-1] + "A",  # right length, no padding
        SECRET_TEXT[:10] + "!" + SECRET_TEXT[11:],  # not base64
        SECRET_TEXT[:10] + "-" + SECRET_TEXT[11:],  # urlsafe alphabet
        SECRET_TEXT[:10] + " " + SECRET_TEXT[11:],  # inner space
        SECRET_TEXT[:42] + "==",  # padding in the middle of the last quantum
    ],
)
def test_decode_key_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        decode_key(text)
    if len(text) > 8:
        assert text not in str(info.value)
        assert text[:20] not in str(info.value)


def test_decode_key_rejects_noncanonical_padding_bits() -> None:
    key = bytes(range(32))
    text = encode_key(key)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[42])
    assert last & 0b11 == 0  # the two low bits of the last character are padding
    for low in (1, 2, 3):
        bad = text[:42] + alphabet[last | low] + "="
        # the same 32 bytes under a lenient decoder, which is what makes this dangerous
        assert base64.b64decode(bad) == key
        with pytest.raises(KeyFormatError) as info:
            decode_key(bad)
        assert bad not in str(info.value)
        assert bad[:43] not in str(info.value)


def test_key_format_error_is_value_error() -> None:
    assert issubclass(KeyFormatError, ValueError)


def test_decode_hex_key() -> None:
    key = bytes(range(32))
    assert decode_hex_key(key.hex()) == key
    assert decode_hex_key(key.hex().upper()) == key
    assert decode_hex_key("00" * 32) == bytes(32)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 33,
        "0" * 63,
        "0" * 65,
        "g" + "0" * 63,
        "0x" + "00" * 31,
        "00" * 31 + "z0",
    ],
)
def test_decode_hex_key_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        decode_hex_key(text)
    if text:
        assert text not in str(info.value)


@pytest.mark.parametrize(
    "text", ["ab" * 31 + "  ", " " + "ab" * 31 + "\n", "ab" * 16 + "  " + "ab" * 15]
)
def test_decode_hex_key_rejects_embedded_whitespace(text: str) -> None:
    assert len(text) == 64
    with pytest.raises(KeyFormatError):
        decode_hex_key(text)


def test_generate_private_key_is_clamped() -> None:
    for fill in (0x00, 0xFF, 0x5A, 0xA5):
        key = generate_private_key(lambda n, fill=fill: bytes([fill]) * n)
        assert len(key) == 32
        assert key[0] & 7 == 0
        assert key[31] & 128 == 0
        assert key[31] & 64 == 64
        # only the clamped bits change
        assert key[1:31] == bytes([fill]) * 30
        assert key[0] == fill & 248
        assert key[31] == (fill & 127) | 64


def test_generate_private_key_default_rng() -> None:
    keys = {generate_private_key() for _ in range(8)}
    assert len(keys) == 8
    for key in keys:
        assert len(key) == 32
        assert key[0] & 7 == 0
        assert key[31] & 0xC0 == 0x40
        assert len(public_key(key)) == 32


@given(st.binary(min_size=32, max_size=32))
def test_generate_private_key_clamped_any_rng(raw: bytes) -> None:
    key = generate_private_key(lambda n: raw[:n])
    assert key[0] & 7 == 0
    assert key[31] & 128 == 0
    assert key[31] & 64 == 64
    # clamping does not change the X25519 public key (X25519 clamps internally)
    assert public_key(key) == public_key(raw)
