"""Files named on the command line are read whole, within the bound on one image, however
they changed since they were listed."""

import zipfile

import pytest

from service import image_files
from service.image_files import gather


@pytest.fixture
def small_bound(monkeypatch):
    monkeypatch.setattr(image_files, "MAX_FILE_BYTES", 100)
    monkeypatch.setattr(image_files, "READ_BYTES", 16)


def test_a_file_reads_as_listed_grown_or_shrunk(tmp_path, small_bound):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 40)
    (file,) = gather([path])
    assert file.size == 40 and file.read() == b"x" * 40
    path.write_bytes(b"y" * 90)  # grew after it was listed: more reads, all of it
    assert file.read() == b"y" * 90
    path.write_bytes(b"z" * 3)
    assert file.read() == b"z" * 3


@pytest.mark.parametrize("listed,now", [(120, 120), (40, 101), (1, 150)])
def test_a_file_over_the_bound_is_refused(tmp_path, small_bound, listed, now):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * listed)
    (file,) = gather([path])
    path.write_bytes(b"x" * now)
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        file.read()


def test_a_zip_member_over_the_bound_is_refused_unread(tmp_path, small_bound):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("big.png", b"x" * 101)
        z.writestr("small.png", b"x" * 100)
    big, small = gather([archive])
    with pytest.raises(ValueError, match="larger than"):
        big.read()
    assert small.read() == b"x" * 100 and small.path == f"{archive}/small.png"
