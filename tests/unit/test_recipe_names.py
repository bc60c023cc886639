"""Recipe names (mwcluster/recipes.py): a "/" would put one recipe's keys inside another's
directory (RANGE reads by string prefix), so such a name, or an empty one, is refused before
anything is sent."""

from __future__ import annotations

import pytest

from mwcluster.recipes import Barrier, Election, Lock


@pytest.mark.parametrize("name", ["a/b", "", "/", "x/"])
def test_a_name_with_a_slash_or_empty_is_refused(name):
    for make in (lambda: Lock(None, name), lambda: Election(None, name),
                 lambda: Barrier(None, name, 2)):
        with pytest.raises(ValueError, match="without '/'"):
            make()


def test_a_plain_name_gets_its_own_directory():
    assert Lock(None, "nightly").key is None
    assert Election(None, "leader").directory == "/elections/leader/"
    assert Barrier(None, "start", 3).ready_key == "/barriers/start/ready"
