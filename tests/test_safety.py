"""Nothing lost, nothing trusted blindly: user data left alone, damage named and traced to its origin,
hidden files ignored, committed notebooks kept, and exit codes that say what happened."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import small_xray_tree
from torchvision.datasets import FashionMNIST

from helpers import data, sources
from helpers.reporting import runner
from helpers.sources import CorruptDataError, IncompleteDataError, ensure_dataset, list_files


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_incomplete_folder_in_data_is_never_changed_and_the_message_says_how_to_fix_it(
        tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, manifest=False)  # the user's own (small) X-ray set
    shutil.rmtree(folder / "test" / "PNEUMONIA")
    (folder / "my_notes.txt").write_text("annotations I made")
    before = _snapshot(folder)
    with pytest.raises(IncompleteDataError) as err:
        data.load_chest_xray(data_root=tmp_path, mirror=mirror)
    assert _snapshot(folder) == before  # nothing deleted, replaced or filled in from the mirror
    msg = str(err.value)
    assert f"the folder {folder} is incomplete (missing: test/PNEUMONIA)" in msg
    n_mirror = len(list_files(mirror / "chest_xray"))
    n_missing = n_mirror - (len(before) - 1)
    assert f"{n_missing:,} file(s) missing here" in msg and "1 file(s) here but not in the mirror: my_notes.txt" in msg
    assert "Nothing in it was changed or deleted" in msg and f"mv '{folder}' '{folder}.mine'" in msg


def test_an_empty_folder_in_data_is_filled_from_the_mirror(tmp_path: Path, mirror: Path) -> None:
    (tmp_path / "FashionMNIST").mkdir()
    folder = ensure_dataset(sources.FASHION, tmp_path, mirror)
    assert sorted(p.name for p in (folder / "raw").iterdir()) == sorted(f for f, _ in FashionMNIST.resources)
    assert (folder / ".provenance.json").exists()


@pytest.fixture(scope="module")
def simpsons_copy(tmp_path_factory, mirror: Path) -> Path:
    root = tmp_path_factory.mktemp("simpsons-data")
    ensure_dataset(sources.SIMPSONS, root, mirror)
    return root


def test_a_simpsons_image_altered_in_place_is_named_even_with_a_warm_cache(simpsons_copy: Path, mirror: Path) -> None:
    root = simpsons_copy
    data.load_simpsons_mnist("grayscale", data_root=root, mirror=mirror)  # builds the cache
    victim = root / "simpsons-mnist" / "dataset" / "grayscale" / "test" / "lisa_simpson" / "pic_0016.jpg"
    if not victim.exists():
        victim = sorted(victim.parent.iterdir())[0]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x10  # same size, still a decodable JPEG: only a checksum sees it
    victim.write_bytes(bytes(damaged))
    try:
        with pytest.raises(CorruptDataError) as err:
            data.load_simpsons_mnist("grayscale", data_root=root, mirror=mirror)
        msg = str(err.value)
        assert "grayscale/test/lisa_simpson do not match the published data set's checksums" in msg
        assert f"altered: {victim.name}" in msg and "copied from the mirror" in msg and "load again" in msg
    finally:
        victim.write_bytes(original)
    assert len(data.load_simpsons_mnist("grayscale", data_root=root, mirror=mirror).test) == 2000


def test_hidden_files_and_folders_are_ignored(simpsons_copy: Path, mirror: Path, tmp_path: Path) -> None:
    rgb = simpsons_copy / "simpsons-mnist" / "dataset" / "rgb"
    extras = [rgb / "train" / ".ipynb_checkpoints", rgb / "test" / "bart_simpson" / "._pic_0000.jpg",
              rgb / "train" / "homer_simpson" / ".DS_Store"]
    extras[0].mkdir()
    for f in extras[1:]:
        f.write_bytes(b"\x00\x05\x16\x07 AppleDouble, not a JPEG")
    try:
        s = data.load_simpsons_mnist("rgb", data_root=simpsons_copy, mirror=mirror)
        assert s.num_classes == 10 and ".ipynb_checkpoints" not in s.classes and len(s.test) == 2000
    finally:
        shutil.rmtree(extras[0])
        for f in extras[1:]:
            f.unlink()
    folder = small_xray_tree(mirror, tmp_path, manifest=False)
    (folder / "train" / "PNEUMONIA" / "._person1_bacteria_1.jpeg").write_bytes(b"\x00\x05\x16\x07")
    x = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    assert not any("/._" in i for i in x.train.ids + x.val.ids)


def test_a_file_damaged_in_the_mirror_itself_is_traced_there(tmp_path: Path, mirror: Path) -> None:
    bad_mirror = tmp_path / "mirror"
    shutil.copytree(mirror / "FashionMNIST", bad_mirror / "FashionMNIST", copy_function=shutil.copyfile)
    victim = bad_mirror / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:2000])
    for attempt in range(2):  # the advice is the same on a second try, and it names the mirror's file
        with pytest.raises(CorruptDataError) as err:
            data.load_fashion_mnist(data_root=tmp_path / "data", mirror=bad_mirror)
        msg = str(err.value)
        assert "t10k-labels-idx1-ubyte.gz: md5" in msg
        assert f"whose own copy {victim} is damaged the same way, so re-copying would not help" in msg


def test_data_cli_exits_non_zero_when_every_data_set_is_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PORTFOLIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setattr(FashionMNIST, "mirrors", [f"file://{tmp_path}/nowhere/"])
    monkeypatch.setattr(sources, "SIMPSONS_URL", f"file://{tmp_path}/nowhere.zip")
    assert data.main([]) == 1
    err = capsys.readouterr().err
    assert "4 data set(s) missing" in err and "two ways" in err
    for name in ("fashion:", "simpsons-rgb:", "simpsons-gray:", "xray:"):
        assert name in err


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('BUDGET = "full"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_only_a_successful_full_run_replaces_a_committed_notebook(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    good = _notebook(folder / "01_good.ipynb", "print('ran with', BUDGET)")
    committed = good.read_bytes()
    monkeypatch.setattr(runner, "notebook_paths", lambda folder_=None: [good])
    report_dir = tmp_path / "report"
    runner.run_all("quick", report_dir)
    assert good.read_bytes() == committed  # a quick run never replaces it
    quick_copy = runner.output_dir("quick") / "notebooks" / good.name
    assert "ran with quick" in quick_copy.read_text() and (report_dir / "_build" / "html" / "notebooks" / "01_good.html").exists()

    bad = _notebook(folder / "02_bad.ipynb", "raise RuntimeError('damaged data')")
    bad_before = bad.read_bytes()
    monkeypatch.setattr(runner, "notebook_paths", lambda folder_=None: [bad])
    with pytest.raises(Exception, match="damaged data"):
        runner.run_all("full", report_dir)
    assert bad.read_bytes() == bad_before and (report_dir / "02_bad.failed.ipynb").exists()

    skipping = _notebook(folder / "03_skips.ipynb", "print('SKIPPED xray: Chest X-ray not found.')")
    skipping_before = skipping.read_bytes()
    monkeypatch.setattr(runner, "notebook_paths", lambda folder_=None: [skipping])
    runner.run_all("full", report_dir)  # finishes, but without a data set: not a full run
    assert skipping.read_bytes() == skipping_before and (report_dir / "03_skips.partial.ipynb").exists()

    monkeypatch.setattr(runner, "notebook_paths", lambda folder_=None: [good])
    runner.run_all("full", report_dir)
    assert "ran with full" in good.read_text()  # the one run that may replace it
