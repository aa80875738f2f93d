"""The `shoplens` command: stages take Hydra overrides; user errors exit cleanly."""

from __future__ import annotations

from shoplens.cli import main


def test_print_config_applies_overrides(capsys):
    assert main(["preprocess", "--print-config", "data.batch_size=7", "loss=arcface"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 7" in out and "ArcFaceLoss" in out


def test_bad_override_is_a_clean_error(capsys):
    assert main(["train", "+data.batchsize=3"]) == 2
    assert "batchsize" in capsys.readouterr().err


def test_missing_catalog_folder_is_a_clean_error(tmp_path, capsys):
    code = main(
        [
            "preprocess",
            "data=folder",
            f"data.root={tmp_path / 'nowhere'}",
            f"paths.catalog_dir={tmp_path / 'catalog'}",
            f"paths.reports_dir={tmp_path / 'reports'}",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
