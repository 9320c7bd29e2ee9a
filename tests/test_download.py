import io
import tarfile
import time
import zipfile

import pytest

from course_lib import download
from course_lib.data import load_dataset


@pytest.fixture
def no_kaggle_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_tfds_offline_says_what_to_do(monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(download, "is_online", lambda *a, **k: False)
    t0 = time.perf_counter()
    with pytest.raises(download.OfflineError) as e:
        load_dataset("mnist", "test")
    msg = str(e.value)
    assert "offline" in msg and "digits" in msg and "COURSE_DATA_DIR" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no stack of URL errors
    assert time.perf_counter() - t0 < 60  # fails fast instead of retrying a download for minutes


def test_kaggle_without_credentials_names_every_way(no_kaggle_credentials, tmp_path):
    assert download.kaggle_credentials() is None
    with pytest.raises(download.MissingCredentialsError) as e:
        download.kaggle_download("jerems69/german-signs", tmp_path / "out")
    msg = str(e.value)
    for way in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "Colab", "/kaggle/input"):
        assert way in msg
    assert not (tmp_path / "out").exists()


def test_kaggle_json_is_read_and_the_key_never_printed(no_kaggle_credentials, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "no-kaggle"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text('{"username": "student", "key": "s3cr3t-k3y"}')
    assert download.kaggle_credentials() == ("student", "s3cr3t-k3y")
    monkeypatch.setattr(download, "is_online", lambda *a, **k: False)
    with pytest.raises(download.OfflineError) as e:
        download.kaggle_download("jerems69/german-signs", tmp_path / "out")
    out = capsys.readouterr()
    assert "s3cr3t-k3y" not in str(e.value) + out.out + out.err


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, payload in entries.items():
            z.writestr(name, payload)
    return path


def test_zip_slip_is_refused_and_nothing_is_written(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    bad = _zip(tmp_path / "bad.zip", {"ok.txt": "fine", "../../escaped.txt": "evil"})
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(bad, dest)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "ok.txt").exists()
    absolute = _zip(tmp_path / "abs.zip", {"/tmp/abs-escape.txt": "evil"})
    with pytest.raises(download.UnsafeArchiveError):
        download.safe_extract(absolute, dest)


def test_good_zip_and_tar_with_link(tmp_path):
    good = _zip(tmp_path / "good.zip", {"Train/0/a.txt": "x", "Meta.csv": "y"})
    download.safe_extract(good, tmp_path / "d")
    assert (tmp_path / "d" / "Train" / "0" / "a.txt").read_text() == "x"
    tar_path = tmp_path / "link.tar"
    with tarfile.open(tar_path, "w") as t:
        info = tarfile.TarInfo("innocent")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info, io.BytesIO(b""))
    with pytest.raises(download.UnsafeArchiveError, match="links"):
        download.safe_extract(tar_path, tmp_path / "t")
