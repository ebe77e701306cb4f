from core import keyformat


def test_it_generates_well_formed_keys() -> None:
    key = keyformat.generate()
    assert key.startswith("tp-sk-")
    assert len(key) == keyformat.KEY_LEN
    assert keyformat.is_well_formed(key)


def test_it_rejects_a_typo_by_checksum() -> None:
    key = keyformat.generate()
    i = len(keyformat.PREFIX) + 5
    typo = key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1 :]
    assert not keyformat.is_well_formed(typo)


def test_it_rejects_garbage() -> None:
    for bad in ["", "tp-sk-", "sk-abc", "tp-sk-" + "!" * 38, keyformat.generate() + "x"]:
        assert not keyformat.is_well_formed(bad)


def test_digest_depends_on_the_pepper() -> None:
    key = keyformat.generate()
    assert keyformat.digest(key, b"one") != keyformat.digest(key, b"two")
    assert len(keyformat.digest(key, b"one")) == 64


def test_masked_shows_prefix_and_last_four_only() -> None:
    key = keyformat.generate()
    masked = keyformat.masked(keyformat.display_prefix(key), keyformat.last_four(key))
    assert masked == key[:10] + "…" + key[-4:]
