import dis2
from dis2.core import config_hash


def test_version_and_hash_stable():
    assert dis2.__version__
    assert config_hash({'a': 1}) == config_hash({'a': 1})
