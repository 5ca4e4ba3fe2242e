"""Runs on a real Dask cluster (``distributed.LocalCluster``, 2 worker processes on
loopback) give the same outputs and record as runs in this process, survive a worker
killed mid-run, resume after the client is killed, and say what workers cannot see.

The model is the zoo's nuclei U-Net (``unet2d_nuclei_broad``); the reference is a run
of the same inputs in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import leftovers, output_array, request, run
from zoodesk.batch.events import FileFinished, RunFinished, RunStarted, RunWarning
from zoodesk.batch.record import RECORD_NAME, RunRecord
from zoodesk.cluster.address import ClusterAddress, cluster_choice, parse_cluster
from zoodesk.errors import ZooDeskError

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FILES = 40
#: What a record entry says of its input and outputs that must not depend on where
#: the input ran (timings, timestamps, the worker and the run id do).
SAME_FIELDS = (
    "status",
    "key",
    "input_size",
    "input_sha256",
    "error",
    "axes",
    "axes_mapping",
    "tiling",
    "pixel_sizes",
    "shape",
    "series",
    "scene",
    "channel_names",
    "streamed",
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 nuclei-like images of a few sizes (crops of the model's own test input)."""
    folder = tmp_path_factory.mktemp("cluster-inputs")
    model = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
    tile = np.load(model / "test_input.npy").reshape(512, 512)
    tile = np.clip(np.rint(tile), 0, 65535).astype(np.uint16)
    rng = np.random.default_rng(7)
    for i in range(FILES):
        h, w = int(rng.integers(96, 257)), int(rng.integers(96, 257))
        y, x = int(rng.integers(0, 512 - h)), int(rng.integers(0, 512 - w))
        tifffile.imwrite(folder / f"img{i:02d}.tif", tile[y : y + h, x : x + w])
    return folder


@pytest.fixture(scope="module")
def local_run(
    nuclei_dir: Path, images: Path, tmp_path_factory: pytest.TempPathFactory
) -> RunFinished:
    out = tmp_path_factory.mktemp("cluster-local")
    _events, finished = run(request(nuclei_dir, [images], out))
    assert finished.record.summary() == {"total": FILES, "ok": FILES}
    return finished


def on_cluster(client: distributed.Client, req, **kwargs) -> tuple[list, RunFinished]:
    from zoodesk.cluster.execute import run_on_cluster

    events = list(run_on_cluster(req, client, **kwargs))
    assert isinstance(events[-1], RunFinished)
    return events, events[-1]


def assert_same_as_local(local: RunFinished, finished: RunFinished) -> None:
    """Same entries (but for timings and where they ran) and the same pixels."""
    ours = {f.input: f for f in finished.record.files}
    assert set(ours) == {f.input for f in local.record.files}
    for theirs in local.record.files:
        entry = ours[theirs.input]
        for name in SAME_FIELDS:
            assert getattr(entry, name) == getattr(theirs, name), (theirs.input, name)
        assert [(o.tensor, o.path, o.shape, o.dtype, o.axes, o.kind) for o in entry.outputs] == [
            (o.tensor, o.path, o.shape, o.dtype, o.axes, o.kind) for o in theirs.outputs
        ]
        for o in entry.outputs:
            got = output_array(finished.record.path.parent, o.path)
            want = output_array(local.record.path.parent, o.path)
            # Workers run ONNX Runtime on one thread each, this process on all cores.
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert finished.record.signature == local.record.signature
    assert finished.record.model == local.record.model
    assert leftovers(finished.record.path.parent) == []


def test_forty_files_on_two_workers_match_a_local_run(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, local_run: RunFinished, tmp_path
) -> None:
    events, finished = on_cluster(cluster, request(nuclei_dir, [images], tmp_path / "out"))
    assert finished.record.summary() == {"total": FILES, "ok": FILES}
    assert_same_as_local(local_run, finished)
    workers = set(cluster.scheduler_info()["workers"])
    used = {f.worker["address"] for f in finished.record.files}
    assert used == workers  # both workers took inputs
    for f in finished.record.files:
        assert f.worker["device"] == "cpu" and f.worker["pid"] != os.getpid()
        assert "lost_workers" not in f.worker
    started = next(e for e in events if isinstance(e, RunStarted))
    assert "2 workers" in started.where
    assert set(finished.record.device["cluster"]["workers"]) == workers
    assert finished.record.device["used"] == "cpu"
    # The saved record says the same as the one in memory.
    saved = RunRecord.load(tmp_path / "out" / RECORD_NAME)
    assert {f.input: f.worker for f in saved.files} == {
        f.input: f.worker for f in finished.record.files
    }


def test_a_worker_killed_mid_run_loses_nothing(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, local_run: RunFinished, tmp_path
) -> None:
    from zoodesk.cluster.execute import run_on_cluster

    pids = cluster.run(os.getpid)
    killed: list[str] = []
    events = []
    for event in run_on_cluster(request(nuclei_dir, [images], tmp_path / "out"), cluster):
        events.append(event)
        done = sum(isinstance(e, FileFinished) for e in events)
        if done == 6 and not killed:
            busy = [w for w, keys in cluster.processing().items() if keys]
            victim = busy[0]
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(victim)
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.record.summary() == {"total": FILES, "ok": FILES}
    assert_same_as_local(local_run, finished)
    rerun = [f for f in finished.record.files if f.worker.get("lost_workers")]
    assert rerun, "the killed worker's task was not recorded as run again"
    assert all(f.worker["lost_workers"] == killed for f in rerun)
    assert all(f.worker["address"] != killed[0] for f in rerun)
    warnings = [e.message for e in events if isinstance(e, RunWarning)]
    assert any(killed[0] in w and "died" in w for w in warnings)
    # The nanny restarts the worker; wait for it, for the tests that follow.
    cluster.wait_for_workers(2, timeout=60)


def test_a_killed_client_resumes(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, local_run: RunFinished, tmp_path
) -> None:
    out = tmp_path / "out"
    address = cluster.scheduler_info()["address"]
    command = [
        sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(nuclei_dir),
        "-i", str(images), "-o", str(out), "--device", "cpu", "--settle-seconds", "0",
        "--cluster", address, "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)])}
    client = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    record = out / RECORD_NAME
    deadline = time.monotonic() + 240
    ok = 0
    while time.monotonic() < deadline and client.poll() is None:
        time.sleep(0.2)
        try:
            ok = sum(f["status"] == "ok" for f in json.loads(record.read_text())["files"])
        except (OSError, ValueError, KeyError):
            continue
        if ok >= 5:
            break
    assert client.poll() is None, client.stderr.read().decode() if client.stderr else ""
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert 5 <= ok < FILES
    events, finished = on_cluster(cluster, request(nuclei_dir, [images], out))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.skipped >= ok
    assert finished.record.summary()["total"] == FILES
    assert all(f.status in ("ok", "skipped") for f in finished.record.files)
    assert_same_as_local(local_run, _as_ok(finished))


def _as_ok(finished: RunFinished) -> RunFinished:
    for f in finished.record.files:
        if f.status == "skipped":
            f.status = "ok"
    return finished


def test_cancel_stops_the_workers_and_a_rerun_finishes(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, local_run: RunFinished, tmp_path
) -> None:
    out = tmp_path / "out"
    finished_count = 0

    def cancelled() -> bool:
        return finished_count >= 4

    from zoodesk.cluster.execute import run_on_cluster

    events = []
    for event in run_on_cluster(request(nuclei_dir, [images], out), cluster, cancelled=cancelled):
        events.append(event)
        finished_count += isinstance(event, FileFinished)
    finished = events[-1]
    assert finished.record.status == "cancelled"
    counts = finished.record.summary()
    assert counts.get("not done", 0) >= FILES - 8
    assert counts.get("ok", 0) >= 4
    assert leftovers(out) == []
    # Nothing of the cancelled run goes on writing: the folder stays as recorded.
    time.sleep(2)
    assert leftovers(out) == []
    _events, again = on_cluster(cluster, request(nuclei_dir, [images], out))
    assert all(f.status in ("ok", "skipped") for f in again.record.files)
    assert_same_as_local(local_run, _as_ok(again))


def test_a_model_the_workers_cannot_see_is_named(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, tmp_path
) -> None:
    from zoodesk.models.package import load_model_package

    copy = tmp_path / "model"
    shutil.copytree(nuclei_dir, copy)
    package = load_model_package(copy)
    assert package.spec.name  # read here, before the folder goes
    copy.rename(tmp_path / "moved")
    with pytest.raises(ZooDeskError) as caught:
        on_cluster(cluster, request(package, [images], tmp_path / "out"))
    message = str(caught.value)
    assert "cannot reach the model package" in message
    assert str(copy) in message
    assert any(worker in message for worker in cluster.scheduler_info()["workers"])
    assert "\n" not in message


def test_an_input_gone_before_its_task_fails_alone(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, tmp_path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("img00.tif", "img01.tif", "img02.tif"):
        shutil.copy(images / name, folder / name)
    from zoodesk.cluster.execute import run_on_cluster

    events = []
    for event in run_on_cluster(request(nuclei_dir, [folder], tmp_path / "out"), cluster):
        if isinstance(event, RunStarted):
            (folder / "img01.tif").unlink()
        events.append(event)
    finished = events[-1]
    by_name = {Path(f.input).name: f for f in finished.record.files}
    assert by_name["img00.tif"].status == "ok" and by_name["img02.tif"].status == "ok"
    gone = by_name["img01.tif"]
    assert gone.status == "failed"
    assert "img01.tif" in gone.error and "\n" not in gone.error


def test_cluster_values() -> None:
    assert parse_cluster("local:3") == ClusterAddress(workers=3)
    assert parse_cluster("local").workers == max(1, os.cpu_count() or 1)
    assert parse_cluster("tcp://scheduler").address == "tcp://scheduler:8786"
    assert parse_cluster("tls://10.0.0.2:9000").address == "tls://10.0.0.2:9000"
    assert cluster_choice(None, "") is None
    assert cluster_choice("none", "local:2") is None
    assert cluster_choice(None, "local:2") == ClusterAddress(workers=2)
    for bad in ("local:0", "local:x", "http://x:1", "scheduler:8786", "tcp://a:99999"):
        with pytest.raises(ZooDeskError, match="--cluster"):
            parse_cluster(bad)


def test_an_unreachable_scheduler_is_one_line(nuclei_dir: Path, images: Path, tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoodesk.cli",
            "predict",
            "-m",
            str(nuclei_dir),
            "-i",
            str(images),
            "-o",
            str(tmp_path / "out"),
            "--cluster",
            "tcp://127.0.0.1:9",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "tcp://127.0.0.1:9" in lines[0] and "cannot reach" in lines[0]


def test_dask_is_not_imported_without_a_cluster() -> None:
    code = (
        "import sys, zoodesk.cli, zoodesk.batch.runner, zoodesk.batch.console;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_objects_made_on_the_workers_match_a_local_run(
    cluster: distributed.Client, nuclei_dir: Path, images: Path, tmp_path
) -> None:
    from zoodesk.instances import InstanceSettings

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        shutil.copy(images / f"img{i:02d}.tif", folder / f"img{i:02d}.tif")
    settings = InstanceSettings(method="threshold", threshold=0.5, min_size=20)
    _events, local = run(request(nuclei_dir, [folder], tmp_path / "local", instances=settings))
    _events, finished = on_cluster(
        cluster, request(nuclei_dir, [folder], tmp_path / "cluster", instances=settings)
    )
    assert [f.status for f in finished.record.files] == ["ok"] * 4
    ours = {f.key: f.instances for f in finished.record.files}
    theirs = {f.key: f.instances for f in local.record.files}
    assert {k: v["count"] for k, v in ours.items()} == {k: v["count"] for k, v in theirs.items()}
    assert sum(v["count"] for v in ours.values()) > 0
    for entry in finished.record.files:
        labels = [o for o in entry.outputs if o.kind == "instance-labels"]
        assert len(labels) == 1
        np.testing.assert_array_equal(
            output_array(tmp_path / "cluster", labels[0].path),
            output_array(tmp_path / "local", labels[0].path),
        )
    assert (tmp_path / "cluster" / "summary.csv").read_text() == (
        tmp_path / "local" / "summary.csv"
    ).read_text()
