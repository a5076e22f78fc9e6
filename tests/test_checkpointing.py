"""Resume checks, checksums, damaged checkpoints, a full disk (checkpointing).

The config checks are generated from the trainers' configs: every field
outside a trainer's `RESUME_ALLOWED` is changed in turn and the resume must be
refused naming it with its saved and new value, so a new config field is
checked without touching these tests. The checkpoints here hold a small
dummy state (no training). Each checkpoint's checksums.json is checked
against sizes and SHA-256 digests computed here. Damage is a truncated or
overwritten (64 random bytes) array file, a garbled JSON item, an added or
removed file, a garbled manifest, or the state's largest array scaled by
1e30 and saved back in place with orbax (it still decodes, so only the
checksums catch it); each must be set aside with a warning naming the
reason. A save SIGKILLed in a subprocess when its checksums are due must
leave the previous checkpoint the latest. A full disk is injected by making
orbax's JSON write raise ENOSPC mid-save.
"""

import errno
import hashlib
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from common import checkpointing
from launch.configs import moe as moe_config
from launch.configs import sac as sac_config
from launch.configs import vae as vae_config
from moe import train as moe_train
from sac import train as sac_train
from vae import train as vae_train

# After a failed save or restore, orbax's worker threads can leave an
# event-loop callback behind; pytest reports it as an unraisable exception.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

REPO = str(pathlib.Path(__file__).resolve().parents[1])
TRAINERS = {
    "sac": (lambda: sac_config.get_config("test"), sac_train.RESUME_ALLOWED),
    "moe": (lambda: moe_config.get_config("test"), moe_train.RESUME_ALLOWED),
    "vae": (lambda: vae_config.get_config("test"), vae_train.RESUME_ALLOWED),
}


def _changed(value):
  """A different value of the same config type."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return 2.0 * value + 1.0
  if isinstance(value, str):
    return value + "_changed"
  if isinstance(value, tuple):
    return value + (value[-1] if value else 1,)
  if value is None:   # Float placeholders (SAC alpha, target_entropy; MoE
    return 0.5        # capacity_factor).
  raise TypeError(f"no changed value for {value!r}")


def _fields(trainer):
  make_config, allowed = TRAINERS[trainer]
  return [(trainer, k) for k in make_config() if k not in allowed]


def _dummy_state():
  return {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3),
          "step": np.array(3, np.int32)}


@pytest.fixture(scope="module")
def saved_configs(tmp_path_factory):
  """Each trainer's test config as stored in and read back from a checkpoint."""
  saved = {}
  for trainer, (make_config, allowed) in TRAINERS.items():
    workdir = str(tmp_path_factory.mktemp(trainer))
    with checkpointing.open_run(workdir, make_config(),
                                allowed_changes=allowed) as run:
      run.save(1, _dummy_state(), meta={"step": 1})
      saved[trainer] = run.checkpointer.restore_config(1)
  return saved


def test_allow_lists_name_existing_fields(saved_configs):
  for trainer, (make_config, allowed) in TRAINERS.items():
    assert set(allowed) < set(make_config()), trainer
    assert saved_configs[trainer] == checkpointing.config_to_dict(make_config())


@pytest.mark.parametrize("trainer,field",
                         _fields("sac") + _fields("moe") + _fields("vae"))
def test_resume_refuses_every_field_outside_the_allow_list(
    saved_configs, trainer, field):
  make_config, allowed = TRAINERS[trainer]
  config = make_config()
  old = config[field]
  config[field] = _changed(old)
  saved = checkpointing.config_to_dict(make_config())[field]
  now = checkpointing.config_to_dict(config)[field]
  with pytest.raises(ValueError, match=(
      r"written with different " + field + r" \(saved "
      + re.escape(repr(saved)) + r", now " + re.escape(repr(now)) + r"\)")):
    checkpointing.check_resume_config(saved_configs[trainer], config, allowed)


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_resume_accepts_changes_of_the_allowed_fields(saved_configs, trainer):
  make_config, allowed = TRAINERS[trainer]
  config = make_config()
  for field in allowed:
    config[field] = _changed(config[field])
  checkpointing.check_resume_config(saved_configs[trainer], config, allowed)


def test_refusal_lists_every_changed_field_and_a_field_only_one_side_has():
  saved = {"a": 1, "b": [2, 3], "c": "x", "gone": 0.5}
  current = {"a": 2, "b": [2, 3], "c": "y", "new": True}
  with pytest.raises(ValueError) as info:
    checkpointing.check_resume_config(saved, current, ("c",), workdir="/w")
  message = str(info.value)
  assert "'/w'" in message
  assert ("a (saved 1, now 2), gone (saved 0.5, now '<absent>'), new (saved "
          "'<absent>', now True)") in message
  assert "c (" not in message


# --- Damaged checkpoints ------------------------------------------------------


def _open(workdir):
  return checkpointing.open_run(str(workdir), {"seed": 0, "num_steps": 9},
                                allowed_changes=("num_steps",))


def test_each_accepted_start_records_the_software_once(tmp_path):
  from common import provenance
  for opens in (1, 2):
    with _open(tmp_path) as run:
      assert run.restore_latest(_dummy_state()) is None
    records = provenance.read(str(tmp_path))
    assert len(records) == opens
    assert records[-1]["packages"]["numpy"] == np.__version__
    assert records[-1]["packages"]["orbax-checkpoint"] is not None


def _save_two(workdir):
  """Checkpoints 1 and 2 holding states 1 * and 2 * the dummy state."""
  with _open(workdir) as run:
    for step in (1, 2):
      state = {k: v * step for k, v in _dummy_state().items()}
      run.save(step, state, meta={"step": step})
  return os.path.join(workdir, "checkpoints")


def _state_data_files(step_dir):
  """The array data files of the state item, sorted."""
  data_files = sorted(
      os.path.join(root, f)
      for root, _, files in os.walk(os.path.join(step_dir, "state"))
      for f in files if os.path.basename(root) == "d")
  assert data_files
  return data_files


def _truncate_arrays(step_dir):
  """Cuts every array data file of the state item to half its length."""
  for path in _state_data_files(step_dir):
    os.truncate(path, os.path.getsize(path) // 2)


def _overwrite_random_bytes(step_dir):
  """Writes 64 random bytes (fixed seed) over the middle of a data file."""
  path = _state_data_files(step_dir)[0]
  size = os.path.getsize(path)
  noise = np.random.default_rng(0).integers(0, 256, 64, np.uint8).tobytes()
  with open(path, "r+b") as f:
    f.seek(max(0, size // 2 - 32))
    f.write(noise)
  assert os.path.getsize(path) == size


def _scale_largest_array(step_dir):
  """Restores the state item with orbax, scales its largest float array by
  1e30 and saves it back in place: a checkpoint that still decodes."""
  path = os.path.join(step_dir, "state")
  with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as orbax_io:
    tree = orbax_io.restore(path)
    leaves, treedef = jax.tree.flatten(tree)
    floats = [i for i, x in enumerate(leaves)
              if np.issubdtype(np.asarray(x).dtype, np.floating)]
    largest = max(floats, key=lambda i: np.asarray(leaves[i]).size)
    leaves[largest] = np.asarray(leaves[largest]) * 1e30
    orbax_io.save(path, args=ocp.args.StandardSave(
        jax.tree.unflatten(treedef, leaves)), force=True)


def _garble_config(step_dir):
  with open(os.path.join(step_dir, "config", "metadata"), "wb") as f:
    f.write(b"\x00\xff garbled {")


def _add_file(step_dir):
  with open(os.path.join(step_dir, "state", "d", "extra"), "wb") as f:
    f.write(b"\x00")


def _remove_file(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _garble_manifest(step_dir):
  with open(os.path.join(step_dir, checkpointing.MANIFEST), "w") as f:
    f.write('{"algorithm": "sha256", "fi')


def _snapshot_tree(directory):
  tree = {}
  for root, _, files in os.walk(directory):
    for f in files:
      with open(os.path.join(root, f), "rb") as fh:
        tree[os.path.relpath(os.path.join(root, f), directory)] = fh.read()
  return tree


def test_each_checkpoint_lists_every_file_with_its_size_and_sha256(tmp_path):
  checkpoints = _save_two(str(tmp_path))
  for step in ("1", "2"):
    step_dir = os.path.join(checkpoints, step)
    with open(os.path.join(step_dir, "checksums.json")) as f:
      manifest = json.load(f)
    assert manifest["algorithm"] == "sha256"
    on_disk = {os.path.relpath(os.path.join(root, f), step_dir)
               for root, _, files in os.walk(step_dir) for f in files}
    # All but itself and the two files orbax writes while it commits.
    assert set(manifest["files"]) == on_disk - {
        "checksums.json", "_CHECKPOINT_METADATA", "commit_success.txt"}
    assert {"config/metadata", "meta/metadata", "state/_METADATA"} < on_disk
    for rel, entry in manifest["files"].items():
      with open(os.path.join(step_dir, rel), "rb") as f:
        data = f.read()
      assert entry == {"size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}, rel


@pytest.mark.parametrize("damage,reason", [
    (_truncate_arrays, r"state/d/[0-9a-f]+ has \d+ bytes, listed \d+"),
    (_garble_config, r"config/metadata (has \d+ bytes|changed)"),
    (_overwrite_random_bytes, r"state/d/[0-9a-f]+ changed \(sha256 "
     r"[0-9a-f]{12}\.\.\., listed [0-9a-f]{12}\.\.\.\)"),
    (_scale_largest_array, r"state/_CHECKPOINT_METADATA is not listed"),
    (_add_file, r"1 file\(s\) differ from checksums.json: state/d/extra is "
     r"not listed\)"),
    (_remove_file, r"1 file\(s\) differ from checksums.json: "
     r"state/_METADATA is missing\)"),
    (_garble_manifest, r"checksums.json is unreadable \(JSONDecodeError"),
])
def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_restores(
    tmp_path, caplog, damage, reason):
  checkpoints = _save_two(str(tmp_path))
  damage(os.path.join(checkpoints, "2"))
  with caplog.at_level(logging.WARNING), _open(str(tmp_path)) as run:
    restored = run.restore_latest(_dummy_state())
    assert restored.step == 1 and restored.meta == {"step": 1}
    np.testing.assert_array_equal(restored.state["w"], _dummy_state()["w"])
    assert run.latest_step() == 1
  assert sorted(os.listdir(checkpoints)) == ["1", "2.damaged-1"]
  warnings = " ".join(r.getMessage() for r in caplog.records
                      if r.levelno == logging.WARNING)
  assert re.search(re.escape(os.path.join(checkpoints, "2")) + r" is damaged "
                   r"\(ChecksumError: .*" + reason, warnings), warnings
  assert "Moved damaged checkpoint 2 to " + os.path.join(
      checkpoints, "2.damaged-1") + "; resuming from checkpoint 1" in warnings


def test_checkpoints_without_checksums_are_used_with_a_warning(tmp_path,
                                                               caplog):
  """Checkpoints written before checksums: restored unverified, with a
  warning; one that does not decode is still set aside."""
  checkpoints = _save_two(str(tmp_path))
  for step in ("1", "2"):
    os.remove(os.path.join(checkpoints, step, "checksums.json"))
  _truncate_arrays(os.path.join(checkpoints, "2"))
  with caplog.at_level(logging.WARNING), _open(str(tmp_path)) as run:
    restored = run.restore_latest(_dummy_state())
    assert restored.step == 1 and run.latest_step() == 1
    np.testing.assert_array_equal(restored.state["w"], _dummy_state()["w"])
  assert sorted(os.listdir(checkpoints)) == ["1", "2.damaged-1"]
  warnings = " ".join(r.getMessage() for r in caplog.records
                      if r.levelno == logging.WARNING)
  assert (os.path.join(checkpoints, "1") + " has no checksums.json (written "
          "before checkpoints carried checksums); it is used unverified"
          ) in warnings
  assert os.path.join(checkpoints, "2") + " is damaged (" in warnings
  assert "ChecksumError" not in warnings


def test_last_good_checkpoint_is_the_newest_that_verifies(tmp_path):
  """latest_step() skips a damaged checkpoint without moving it."""
  checkpoints = _save_two(str(tmp_path))
  _scale_largest_array(os.path.join(checkpoints, "2"))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  assert checkpointer.all_steps() == [1, 2]
  assert checkpointer.latest_step() == 1
  with pytest.raises(checkpointing.ChecksumError,
                     match=r"state/_CHECKPOINT_METADATA is not listed"):
    checkpointer.restore(2, _dummy_state(), with_host=False)
  checkpointer.close()
  with _open(str(tmp_path)) as run:
    assert run.latest_step() == 1
  _overwrite_random_bytes(os.path.join(checkpoints, "1"))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  assert checkpointer.latest_step() is None
  checkpointer.close()
  assert sorted(os.listdir(checkpoints)) == ["1", "2"]


# Saves checkpoint 3 but is SIGKILLed once every array and JSON file of it is
# written, when the manifest is due: the last moment before orbax's rename.
_KILLED_SAVE = """
import os, signal, sys
import numpy as np
from common import checkpointing

def killed(step_dir):
  os.kill(os.getpid(), signal.SIGKILL)

checkpointing.write_manifest = killed
with checkpointing.open_run(sys.argv[1], {"seed": 0, "num_steps": 9},
                            allowed_changes=("num_steps",)) as run:
  run.save(3, {"w": np.zeros((2, 3), np.float32), "step": np.array(3)},
           meta={"step": 3})
"""


def test_a_save_killed_before_its_checksums_leaves_the_previous_latest(
    tmp_path, caplog):
  checkpoints = _save_two(str(tmp_path))
  killed = subprocess.run(
      [sys.executable, "-c", _KILLED_SAVE, str(tmp_path)], cwd=REPO,
      env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
      timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  partial = [n for n in os.listdir(checkpoints) if n not in ("1", "2")]
  assert len(partial) == 1 and partial[0].startswith("3.orbax-checkpoint-tmp")
  assert os.path.isfile(os.path.join(checkpoints, partial[0], "state",
                                     "_METADATA"))   # Data written, ...
  assert not os.path.exists(os.path.join(checkpoints, partial[0],
                                         "checksums.json"))  # ... no manifest.
  with caplog.at_level(logging.WARNING), _open(str(tmp_path)) as run:
    assert run.latest_step() == 2
    restored = run.restore_latest(_dummy_state())
    assert restored.step == 2
    run.save(3, restored.state, meta={"step": 3})   # The same step again.
  warnings = " ".join(r.getMessage() for r in caplog.records
                      if r.levelno == logging.WARNING)
  assert "damaged" not in warnings and "checksums" not in warnings
  assert sorted(os.listdir(checkpoints)) == ["2", "3"]
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.verify(3)
  assert checkpointer.latest_step() == 3
  checkpointer.close()


def test_no_checkpoint_restores_error_changes_nothing(tmp_path):
  checkpoints = _save_two(str(tmp_path))
  _truncate_arrays(os.path.join(checkpoints, "2"))
  _garble_config(os.path.join(checkpoints, "1"))
  before = _snapshot_tree(str(tmp_path))
  with _open(str(tmp_path)) as run:
    with pytest.raises(checkpointing.CheckpointsDamagedError,
                       match=r"no checkpoint in .*checkpoints restores: "
                       r"checkpoint 2: .*; checkpoint 1: "
                       r".*Nothing was renamed"):
      run.restore_latest(_dummy_state())
  after = _snapshot_tree(str(tmp_path))
  after.pop("run.lock"), before.pop("run.lock")  # Holds the pid.
  assert after == before


# A state whose "m" changed from a dict of two arrays to their concatenation.
_SPLIT = checkpointing.Layout(
    name="split m",
    template=lambda like, _: {"w": like["w"], "m": {"a": like["m"][:2],
                                                    "b": like["m"][2:]}},
    convert=lambda old, _: {"w": old["w"], "m": np.concatenate(
        [old["m"]["a"], old["m"]["b"]])})


def test_a_checkpoint_in_an_earlier_layout_is_converted(tmp_path):
  old = {"w": np.float32([1, 2]), "m": {"a": np.float32([3, 4]),
                                        "b": np.float32([5])}}
  like = {"w": np.zeros(2, np.float32), "m": np.zeros(3, np.float32)}
  with _open(tmp_path) as run:
    run.save(1, old, meta={"step": 1})
  with _open(tmp_path) as run:
    with pytest.raises(checkpointing.CheckpointsDamagedError):
      run.restore_latest(like)   # Without the layout it cannot restore...
    restored = run.restore_latest(like, layouts=[_SPLIT])
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state["w"], [1, 2])
  np.testing.assert_array_equal(restored.state["m"], [3, 4, 5])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  # ...and a checkpoint in the current layout ignores the layouts.
  with _open(tmp_path / "new") as run:
    run.save(1, {"w": np.float32([7, 8]), "m": np.float32([9, 9, 9])},
             meta={"step": 1})
    restored = run.restore_latest(like, layouts=[_SPLIT])
  np.testing.assert_array_equal(restored.state["m"], [9, 9, 9])


def test_a_layout_the_config_names_is_tried_before_the_current_structure(
    tmp_path, monkeypatch):
  old = {"w": np.float32([1, 2]), "m": {"a": np.float32([3, 4]),
                                        "b": np.float32([5])}}
  like = {"w": np.zeros(2, np.float32), "m": np.zeros(3, np.float32)}
  with _open(tmp_path) as run:
    run.save(1, old, meta={"step": 1})
  tried = []
  restore = checkpointing.Checkpointer._restore

  def recording(self, step, state_like, with_host):
    tried.append("split" if isinstance(state_like["m"], dict) else "current")
    return restore(self, step, state_like, with_host)

  monkeypatch.setattr(checkpointing.Checkpointer, "_restore", recording)
  named = _SPLIT._replace(holds=lambda source: source.config["num_steps"] == 9)
  with _open(tmp_path) as run:
    restored = run.restore_latest(like, layouts=[named])
  np.testing.assert_array_equal(restored.state["m"], [3, 4, 5])
  assert tried == ["split"]  # No failed attempt at the current structure.


def test_a_checkpoint_in_no_known_layout_names_the_layouts_tried(tmp_path):
  with _open(tmp_path) as run:
    run.save(1, _dummy_state(), meta={"step": 1})
    like = {"w": np.zeros(2, np.float32), "m": np.zeros(3, np.float32)}
    with pytest.raises(Exception) as info:
      run.checkpointer.restore(1, like, with_host=False, layouts=[_SPLIT])
  assert "not in the other layouts either: ['split m']" in "".join(
      getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("error", [
    MemoryError(),
    ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
               "17179869184 bytes.")])
def test_running_out_of_memory_while_restoring_is_not_damage(
    tmp_path, monkeypatch, error):
  """A restore that fails for lack of memory stops the run; nothing is moved."""
  checkpoints = _save_two(str(tmp_path))

  def out_of_memory(*args, **kwargs):
    raise error

  before = _snapshot_tree(str(tmp_path))
  with _open(str(tmp_path)) as run:
    monkeypatch.setattr(run.checkpointer, "restore", out_of_memory)
    with pytest.raises(type(error)):
      run.restore_latest(_dummy_state())
  after = _snapshot_tree(str(tmp_path))
  after.pop("run.lock"), before.pop("run.lock")  # Holds the pid.
  assert after == before
  assert sorted(os.listdir(checkpoints)) == ["1", "2"]


def test_changed_config_is_refused_before_anything_is_set_aside(tmp_path):
  checkpoints = _save_two(str(tmp_path))
  with _open(tmp_path) as run:   # An accepted start: one provenance record.
    run.restore_latest(_dummy_state())
  records = (tmp_path / "provenance.json").read_text()
  _truncate_arrays(os.path.join(checkpoints, "2"))
  with checkpointing.open_run(str(tmp_path), {"seed": 1, "num_steps": 9},
                              allowed_changes=("num_steps",)) as run:
    with pytest.raises(ValueError, match=r"seed \(saved 0, now 1\)"):
      run.restore_latest(_dummy_state())
  assert sorted(os.listdir(checkpoints)) == ["1", "2"]
  assert (tmp_path / "provenance.json").read_text() == records  # Unchanged.


# --- A full disk --------------------------------------------------------------


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    # How tensorstore reports it (orbax's array writes): a ValueError.
    ValueError('RESOURCE_EXHAUSTED: Error writing "w/0": Failed to write 8 '
               "bytes to file 14: No space left on device "
               "[os_error_code='28']")])
def test_disk_full_during_save_names_the_path_and_keeps_the_previous(
    tmp_path, monkeypatch, error):
  checkpoints = _save_two(str(tmp_path))

  async def full_disk(self, x, directory):
    (directory / self._filename).write_text('{"partial')
    raise error

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler,
                      "_save_fn", full_disk)
  with _open(str(tmp_path)) as run:
    with pytest.raises(checkpointing.CheckpointDiskFullError,
                       match=r"disk full: .* while saving checkpoint 3 to "
                       + re.escape(checkpoints) + r"; the previous checkpoint "
                       r"\(2\) is intact"):
      run.save(3, _dummy_state(), meta={"step": 3})
  monkeypatch.undo()
  assert sorted(os.listdir(checkpoints)) == ["1", "2"]  # Partial save removed.
  with _open(str(tmp_path)) as run:
    restored = run.restore_latest(_dummy_state())
  assert restored.step == 2
  np.testing.assert_array_equal(restored.state["w"], 2 * _dummy_state()["w"])


def test_fields_that_may_grow_are_refused_only_when_they_shrink():
  saved = {"seed": 0, "rows": 100}
  checkpointing.check_resume_config(saved, {"seed": 0, "rows": 300}, (),
                                    may_grow=("rows",))
  with pytest.raises(ValueError, match=r"rows \(saved 100, now 50\)\. Only "
                     r"\(\) may change on resume, and \('rows',\) may grow"):
    checkpointing.check_resume_config(saved, {"seed": 0, "rows": 50}, (),
                                      may_grow=("rows",))
  with pytest.raises(ValueError, match=r"rows \(saved 100, now 300\)"):
    checkpointing.check_resume_config(saved, {"seed": 0, "rows": 300}, ())


def _run_keeping(workdir, keep, last):
  """A run keeping the latest 2 checkpoints and `keep`, saved every step to
  `last`; returns the steps on disk."""
  config = {"num_steps": last, "keep": list(keep)}
  with checkpointing.open_run(str(workdir), config,
                              allowed_changes=("num_steps", "keep"),
                              keep_steps=keep, keep_steps_field="keep") as run:
    restored = run.restore_latest(_dummy_state())
    for step in range(restored.step + 1 if restored else 1, last + 1):
      run.save(step, _dummy_state(), meta={"step": step})
    return run.checkpointer.all_steps()


def test_a_resume_with_other_kept_steps_deletes_none_kept_before(tmp_path):
  assert _run_keeping(tmp_path, (2, 5), 5) == [2, 4, 5]
  # 5 was kept by the first list only, 2 is older than the latest two.
  assert _run_keeping(tmp_path, (8,), 6) == [2, 5, 6]
  # Resumed from 6, whose config lists (8,) only: 5 is among the latest
  # two, and its own config says it was kept.
  assert _run_keeping(tmp_path, (8,), 10) == [2, 5, 8, 9, 10]
  assert _run_keeping(tmp_path, (), 12) == [2, 5, 8, 11, 12]


def test_a_layout_that_refuses_stops_the_resume_without_setting_aside(
    tmp_path):
  _save_two(str(tmp_path))

  def refuse(like, source):
    raise checkpointing.LayoutRefused(f"checkpoint {source.step} cannot "
                                      "convert")

  refusing = checkpointing.Layout("refusing", template=refuse,
                                  convert=lambda s, _: s)
  like = {"v": np.zeros((2, 3), np.float32)}  # Not the saved structure.
  with _open(tmp_path) as run:
    with pytest.raises(checkpointing.LayoutRefused,
                       match="checkpoint 2 cannot convert"):
      run.restore_latest(like, layouts=(refusing,))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
