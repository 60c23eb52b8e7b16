import os
import stat

import pytest

from identigraph.config import load_settings
from identigraph.errors import PiiKeyError, SchemaError
from identigraph.graph.pseudonym import Pseudonymiser, key_file, resolve_key


def test_keyed_hash_is_deterministic_normalised_and_key_dependent():
    a, b = Pseudonymiser(b"k" * 32), Pseudonymiser(b"j" * 32)
    assert a.email(" Jane.Doe@Example.COM ") == a.email("jane.doe@example.com")
    assert a.phone("+971 50-123-4567") == a.phone("+971501234567") == a.phone("00971501234567")
    assert a.email("jane.doe@example.com") != b.email("jane.doe@example.com")
    assert a.email("x@y.z") != a.phone("+971501234567")
    assert len(a.email("x@y.z")) == 32
    assert "k" * 32 not in repr(a)


def test_invalid_pii_raises_without_echoing_it():
    p = Pseudonymiser(b"k" * 32)
    with pytest.raises(SchemaError, match=r"^phone: ") as info:
        p.phone("call me maybe")
    assert "call me" not in str(info.value)
    with pytest.raises(PiiKeyError):
        Pseudonymiser(b"short")


def test_local_profile_creates_key_once_with_private_mode(tmp_path):
    s = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    k1 = resolve_key(s, environ={})
    k2 = resolve_key(s, environ={})
    assert k1 == k2 and len(k1) == 64
    mode = stat.S_IMODE(os.stat(key_file(s)).st_mode)
    assert mode == 0o600


def test_key_from_config_or_env_wins(tmp_path):
    s = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "pii": {"key": "from-config-0123456789"}})
    assert resolve_key(s, environ={"IDENTIGRAPH_PII_KEY": "from-env-0123456789"}) == b"from-config-0123456789"
    s2 = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    assert resolve_key(s2, environ={"IDENTIGRAPH_PII_KEY": "from-env-0123456789"}) == b"from-env-0123456789"
    assert not key_file(s2).exists()


def test_production_profile_refuses_without_key(tmp_path):
    s = load_settings(environ={}, overrides={"profile": "production", "data_dir": str(tmp_path),
                                             "graph": {"host": "neptune.example"}})
    with pytest.raises(PiiKeyError, match="production profile needs"):
        resolve_key(s, environ={})
    assert not key_file(s).exists()
