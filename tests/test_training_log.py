"""The train stage writes DVCLive's file layout itself: the same curves DVCLive writes,
and a metrics.json that holds only the headline numbers of DVCLive's."""

from __future__ import annotations

import json

from mnist_pipeline.training.log import TrainingLog
from mnist_pipeline.training.stats import EpochStats


def _history(val: bool) -> list[EpochStats]:
    return [
        EpochStats(
            epoch=epoch,
            epochs=3,
            train_loss=2.0 / epoch,
            train_accuracy=0.1 * epoch,
            val_loss=1.5 / epoch if val else None,
            val_accuracy=0.3 + 0.01 * epoch if val else None,
            lr=0.001 * epoch,
            seconds=0.25,
        )
        for epoch in (1, 2, 3)
    ]


def _files(folder) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_log_files_equal_what_dvclive_writes(tmp_path):
    """dvclive (a test-time dependency only) logging the same values gives the same curves;
    our metrics.json is its summary without `step` and `lr` (not headline numbers), and
    the wall-clock files and run.json are only ours."""
    from dvclive import Live

    for val in (False, True):
        ours, theirs = tmp_path / f"ours-{val}", tmp_path / f"dvclive-{val}"
        log = TrainingLog(ours)
        log.replay(_history(val))
        log.finish(kept_epoch=3, train_seconds=1.0, images_seen=3000)
        with Live(dir=str(theirs), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for stats in _history(val):
                live.step = stats.epoch
                live.log_metric("train/loss", stats.train_loss)
                live.log_metric("train/accuracy", stats.train_accuracy)
                if val:
                    live.log_metric("val/loss", stats.val_loss)
                    live.log_metric("val/accuracy", stats.val_accuracy)
                live.log_metric("lr", stats.lr)
                live.next_step()
        written, expected = _files(ours), _files(theirs)
        assert json.loads(written.pop("timing.json"))["images_per_second"] == 3000.0
        seconds = written.pop("epoch_seconds.tsv").splitlines()
        assert seconds == ["step\tepoch_seconds", "1\t0.25", "2\t0.25", "3\t0.25"]
        assert json.loads(written.pop("run.json")) == {"epochs": 3, "kept_epoch": 3}
        summary = json.loads(expected.pop("metrics.json"))
        assert summary.pop("step") == 3
        assert summary.pop("lr") == 0.003
        assert json.loads(written.pop("metrics.json")) == summary
        assert set(summary) == ({"train", "val"} if val else {"train"})
        assert written == expected


def test_a_new_run_starts_fresh_curves(tmp_path):
    TrainingLog(tmp_path).replay(_history(val=True))
    log = TrainingLog(tmp_path)  # e.g. after switching val_size off
    log.replay(_history(val=False)[:1])
    assert not (tmp_path / "plots/metrics/val").exists()
    rows = (tmp_path / "plots/metrics/train/loss.tsv").read_text().splitlines()
    assert rows == ["step\tloss", "1\t2.0"]
