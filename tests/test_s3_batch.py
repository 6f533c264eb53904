"""The batch entirely on S3 (moto over real HTTP): inputs, outputs, reports and feature cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import pytest
from conftest import noise_image
from s3server import SECRET_KEY, FaultyProxy, make_bucket, point_env, s3_client

from flows.batch import stylize_batch
from flows.cli.main import main
from stylecore import images

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]
SIZE, ITERATIONS = 32, 2


def png(seed: int, shape=(40, 56)) -> bytes:
    return images.encode_png(noise_image(*shape, seed=seed))


def upload_batch(endpoint: str, rows=(("a", "starry"), ("b", "starry"), ("c", "wave"))) -> None:
    files = {f"in/photos/{c}.png": png(i) for i, (c, _) in enumerate(rows)}
    files |= {"in/styles/starry.png": png(10, (48, 48)), "in/styles/wave.png": png(11, (36, 60))}
    manifest = "content,style\n" + "".join(f"photos/{c}.png,styles/{s}.png\n" for c, s in rows)
    files["in/manifest.csv"] = manifest  # relative paths: against s3://art/in/
    make_bucket(endpoint, "art", files)


def objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    listing = client.list_objects_v2(Bucket="art", Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket="art", Key=o["Key"])["Body"].read() for o in listing}


def run(weights, **more):
    return stylize_batch(
        manifest="s3://art/in/manifest.csv",
        output="s3://art/out",
        feature_cache="s3://art/cache",
        weights=str(weights),
        size=SIZE,
        iterations=ITERATIONS,
        return_state=True,
        **more,
    )


def test_a_batch_entirely_on_s3(s3_env, tiny_weights):
    upload_batch(s3_env)
    assert run(tiny_weights).is_completed()
    out = objects(s3_env, "out/")
    report = json.loads(out["out/report.json"])
    assert report["summary"] == {"done": 3, "skipped": 0, "failed": 0}
    for pair in report["pairs"]:
        assert pair["output"].startswith("s3://art/out/")
        key = pair["output"].removeprefix("s3://art/")
        assert max(iio.imread(out[key]).shape[:2]) == SIZE
        assert key.removesuffix(".png") + ".json" in out
    assert {"out/failed.csv", "out/contact-sheet.png"} <= set(out)
    assert any(k.startswith("out/reports/") for k in out)
    head = s3_client(s3_env).head_object(Bucket="art", Key=report["pairs"][0]["output"][9:])
    assert head["ContentType"] == "image/png"
    cache = objects(s3_env, "cache/")
    assert (
        sum(k.endswith(".npz") for k in cache) == 2 and sum(k.endswith(".json") for k in cache) == 2
    )
    assert all(SECRET_KEY.encode() not in body for body in out.values())

    # Again: everything skipped; into a new root with the same cache: features reused.
    run(tiny_weights)
    again = json.loads(objects(s3_env, "out/report.json")["out/report.json"])
    assert again["summary"]["skipped"] == 3
    stylize_batch(
        manifest="s3://art/in/manifest.csv",
        output="s3://art/out2",
        feature_cache="s3://art/cache",
        weights=str(tiny_weights),
        size=SIZE,
        iterations=ITERATIONS,
    )
    other = json.loads(objects(s3_env, "out2/report.json")["out2/report.json"])
    assert other["summary"]["done"] == 3
    assert [f["cache"] for f in other["style_features"]] == ["reused", "reused"]


def test_a_missing_object_fails_its_pair_only(s3_env, tiny_weights):
    upload_batch(s3_env)
    s3_client(s3_env).delete_object(Bucket="art", Key="in/photos/b.png")
    state = run(tiny_weights)
    assert state.is_failed()
    report = json.loads(objects(s3_env, "out/report.json")["out/report.json"])
    assert report["summary"] == {"done": 2, "skipped": 0, "failed": 1}
    (failed,) = [p for p in report["pairs"] if p["status"] == "failed"]
    assert failed["error"] == "content 's3://art/in/photos/b.png': not found"


def test_transient_faults_do_not_stop_the_batch(s3_env, tiny_weights, monkeypatch):
    upload_batch(s3_env)
    with FaultyProxy(s3_env, fault_rate=0.15, seed=3) as proxy:
        point_env(monkeypatch, proxy.url)
        state = run(tiny_weights)
        faults = sum(n for what, n in proxy.counts.items() if what in ("500", "503", "drop"))
    point_env(monkeypatch, s3_env)
    assert state.is_completed(), state.message
    assert faults > 0  # the proxy did interfere
    out = objects(s3_env, "out/")
    report = json.loads(out["out/report.json"])
    assert report["summary"]["done"] == 3
    for pair in report["pairs"]:
        assert iio.imread(out[pair["output"].removeprefix("s3://art/")]).shape[2] in (3, 4)


def test_access_denied_on_the_output_root_is_reported_clearly(
    s3_env, tiny_weights, monkeypatch, capsys
):
    upload_batch(s3_env)
    with FaultyProxy(s3_env, fault_rate=0.0) as proxy:
        proxy.deny("art", "out/")
        point_env(monkeypatch, proxy.url)
        code = main(
            [
                "run",
                "s3://art/in/manifest.csv",
                "-o",
                "s3://art/out",
                "--weights",
                str(tiny_weights),
                "--size",
                str(SIZE),
                "--iterations",
                "1",
                "--quiet",
                "--feature-cache",
                "s3://art/cache",
            ]
        )
    captured = capsys.readouterr()
    assert code == 2
    assert "access denied" in captured.err and "s3://art/out" in captured.err
    assert SECRET_KEY not in captured.out + captured.err


@pytest.mark.slow
def test_the_cli_on_s3_as_a_user_runs_it(s3_env, tiny_weights, tmp_path):
    """`stylebatch run s3://…` in its own process with its own temporary Prefect server."""
    upload_batch(s3_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "s3://art/in/manifest.csv",
        "-o",
        "s3://art/out",
        "--feature-cache",
        "s3://art/cache",
        "--weights",
        str(tiny_weights),
        "--size",
        str(SIZE),
        "--iterations",
        str(ITERATIONS),
        "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 done" in done.stdout
    assert SECRET_KEY not in done.stdout + done.stderr
    out = objects(s3_env, "out/")
    assert json.loads(out["out/report.json"])["summary"]["done"] == 3
    assert all(SECRET_KEY.encode() not in body for body in out.values())
    assert any(k.startswith("cache/") for k in objects(s3_env, "cache/"))
