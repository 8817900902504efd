"""skyml.parallel: per-item seeds, the modes chosen by the environment, and every
ported fan-out giving the same arrays bit for bit in this process and on a
dask LocalCluster of one and of two workers (loopback, one module-scoped
cluster scaled from one worker to two)."""

from __future__ import annotations

import json
import math
import pickle
import time
import warnings

import numpy as np
import pytest

from skyml import parallel, paths
from skyml.cta import baselines as cta_baselines
from skyml.cta import simulate as cta_simulate
from skyml.ctao import baselines as ctao_baselines
from skyml.ctao import simulate as ctao_simulate
from skyml.fermi import baselines as fermi_baselines
from skyml.fermi import cutouts, flux
from skyml.fermi import simulate as fermi_simulate
from skyml.optical import baselines as optical_baselines
from skyml.optical import simulate as optical_simulate
from skyml.radio import baselines as radio_baselines
from skyml.radio import simulate as radio_simulate


# --------------------------------------------------------------------------- without a cluster
def test_item_seeds_are_the_spawned_children_whatever_the_chunking():
    spawned = np.random.SeedSequence([7, 2]).spawn(9)
    direct = parallel.item_seeds([7, 2], 9)
    chunked = parallel.item_seeds([7, 2], 4) + parallel.item_seeds([7, 2], 9, 4)
    for a, b, c in zip(spawned, direct, chunked):
        assert a.spawn_key == b.spawn_key == c.spawn_key
        assert np.array_equal(a.generate_state(4), b.generate_state(4))
        assert np.array_equal(a.generate_state(4), c.generate_state(4))
    base = np.random.SeedSequence(3)
    parallel.item_seeds(base, 5)
    assert base.n_children_spawned == 0  # the parameter seed is not consumed
    assert not np.array_equal(direct[0].generate_state(2), direct[1].generate_state(2))


def _draw(item, seed, scale):
    return scale * np.random.default_rng(seed).normal(size=item)


def test_in_process_map_keeps_the_order_seeds_and_shared_arguments():
    out = parallel.map_items(_draw, [3, 1, 2], seed=11, progress=False, scale=2.0)
    seeds = parallel.item_seeds(11, 3)
    for n, s, o in zip([3, 1, 2], seeds, out):
        assert np.array_equal(o, 2.0 * np.random.default_rng(s).normal(size=n))
    assert parallel.map_items(math.sqrt, [9, 4, 1], progress=False) == [3.0, 2.0, 1.0]
    assert parallel.map_items(math.sqrt, []) == []


def test_modes_from_the_environment(tmp_path):
    mode = parallel.configured_mode
    assert mode({}).kind == "in-process"
    assert mode({"SKYML_WORKERS": "0"}).kind == "in-process"
    assert mode({"SKYML_WORKERS": "3"}) == parallel.Mode("local", 3)
    assert mode({"SKYML_SCHEDULER": "tcp://10.0.0.1:8786"}) == parallel.Mode("scheduler", address="tcp://10.0.0.1:8786")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text("{}")
    assert mode({"SKYML_SCHEDULER": str(scheduler_file)}).address == str(scheduler_file)
    for env, match in (({"SKYML_WORKERS": "two"}, "SKYML_WORKERS must be an integer"),
                       ({"SKYML_WORKERS": "-1"}, "SKYML_WORKERS must be >= 0"),
                       ({"SKYML_SCHEDULER": str(tmp_path / "missing.json")}, "existing scheduler file"),
                       ({"SKYML_SCHEDULER": "tcp://a:1", "SKYML_WORKERS": "2"}, "not both")):
        with pytest.raises(ValueError, match=match):
            mode(env)
    with pytest.warns(FutureWarning, match="SKYML_SIM_WORKERS is deprecated"):
        assert mode({"SKYML_SIM_WORKERS": "2"}) == parallel.Mode("local", 2)
    with pytest.warns(FutureWarning):
        assert mode({"SKYML_SIM_WORKERS": "1"}).kind == "in-process"
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="SKYML_SIM_WORKERS"):
        mode({"SKYML_SIM_WORKERS": "zero"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mode({"SKYML_WORKERS": "2", "SKYML_SIM_WORKERS": "5"}).workers == 2  # the new name wins


def test_wcs_travels_to_the_workers_exactly():
    from astropy.coordinates import SkyCoord
    from gammapy.maps import WcsGeom

    parallel._register_exact_pickles()
    geom = WcsGeom.create(skydir=SkyCoord(123.456789012345, -33.33333333333, unit="deg"), npix=64,
                          binsz=0.0250000000001, proj="TAN")
    back = pickle.loads(pickle.dumps(geom))
    x, y = np.meshgrid(np.arange(0.0, 64.0, 7.3), np.arange(0.0, 64.0, 5.1))
    assert np.array_equal(geom.wcs.pixel_to_world_values(x, y), back.wcs.pixel_to_world_values(x, y))
    assert np.array_equal(geom.wcs.wcs.crval, back.wcs.wcs.crval)


# --------------------------------------------------------------------------- every fan-out, three ways
FERMI = fermi_simulate.FermiSimParams(patches_per_sky=2, density_factor=0.3, npix=32, patch_deg=5.0)
RADIO = radio_simulate.RadioSimParams()
CTA = cta_simulate.CTASimParams(npix=64, irfs=cta_simulate.IRF_NAMES[:2])
CTAO = ctao_simulate.SurveyParams(npix=64)
OPTICAL = optical_simulate.OpticalParams(npix=64)
CUTOUTS = cutouts.CutoutParams()


@pytest.fixture(scope="module")
def inputs():
    """Inputs of the baselines, simulated once in this process."""
    src = cutouts.simulate_cutouts({"AGN": 2}, 5, "train", CUTOUTS)
    maps = cta_simulate.simulate_maps(4, 11, CTA, progress=False)
    return {
        "fermi": fermi_simulate.simulate_patches(3, 5, FERMI, "test"),
        "cutouts": (src["counts"].sum(axis=1), src["background"]),
        "cta": (maps, [cta_simulate.map_geom(r, d, CTA.npix, CTA.binsz_deg)
                       for r, d in zip(maps["pnt_ra_deg"], maps["pnt_dec_deg"])]),
        "ctao": ctao_simulate.simulate_patches(2, 3, CTAO, "test")["counts"],
        "optical": optical_simulate.simulate_tiles(3, 5, "cluster", OPTICAL, "test"),
        "radio": radio_simulate.simulate_fields(3, 5, RADIO, "val", 128, ("alpha_s0", "broken")),
    }


def _prefixed(prefix, d):
    return {f"{prefix}/{k}": np.asarray(v) for k, v in d.items() if k != "seconds"}


def fermi_patches(_):
    return {**_prefixed("train", fermi_simulate.simulate_patches(4, 3, FERMI, "train")),
            **_prefixed("test", fermi_simulate.simulate_patches(3, 5, FERMI, "test")),
            **_prefixed("dr2", fermi_simulate.simulate_patches(2, 5, FERMI, "demo", sky="dr2"))}


def radio_fields(_):
    return _prefixed("fields", radio_simulate.simulate_fields(3, 5, RADIO, "val", 128, ("alpha_s0", "broken")))


def cta_maps(_):
    return _prefixed("maps", cta_simulate.simulate_maps(5, 11, CTA, progress=False))


def fermi_tsmap(x):
    return _prefixed("tsmap", fermi_baselines.tsmap_detect_all(x["fermi"], FERMI, kernel_width_deg=1.5,
                                                               sqrt_ts_min=3.0, progress=False))


def fermi_flux_fits(x):
    return _prefixed("fits", flux.likelihood_fluxes(*x["cutouts"], CUTOUTS, progress=False))


def cta_blind_search_and_fits(x):
    maps, geoms = x["cta"]
    background = cta_simulate.background_for(maps)
    blind = cta_baselines.blind_search_batch(maps["counts"], background, geoms, progress=False)
    fit = cta_baselines.fit_point_source_batch(maps["counts"], background, geoms, maps["psf_sigmas_deg"],
                                               maps["psf_weights"], np.stack([blind["ra_deg"], blind["dec_deg"]], 1),
                                               progress=False)
    fit["message"] = fit["message"].astype(str)
    return {**_prefixed("blind", blind), **_prefixed("fit", fit)}


def ctao_tsmap(x):
    return _prefixed("tsmap", ctao_baselines.tsmap_detect_all(x["ctao"], CTAO, downsampling_factor=4,
                                                              progress=False))


def optical_daofind(x):
    return _prefixed("dao", optical_baselines.daofind_all(x["optical"]["image"], x["optical"]["fwhm_px"], 3.0))


def pd_fits(x):
    model = radio_baselines.PDModel(RADIO, 128, n_flux=40, grid_size=4096)
    fits = radio_baselines.fit_fields(model, x["radio"]["restored"], progress=False)
    return {f"pd/{k}": np.array([f[k] for f in fits]) for k in fits[0]}


CASES = (fermi_patches, radio_fields, cta_maps, fermi_tsmap, fermi_flux_fits, cta_blind_search_and_fits, ctao_tsmap,
         optical_daofind, pd_fits)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as local, \
            Client(local, direct_to_workers=True, set_as_default=False) as client:
        yield local, client


@pytest.fixture(scope="module")
def runs(inputs, cluster, tmp_path_factory):
    """Every case in this process, on one worker, then on two. Small chunks
    (several tasks per fan-out) and every dict of arrays written to disk by
    the workers (the scratch path of large results)."""
    local, client = cluster
    scratch = tmp_path_factory.mktemp("cache")
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        # a cache of its own for each mode: the baselines that cache their results
        # (CTA blind search and fits, CTAO TS maps) compute them again in every mode
        mp.setattr(paths, "CACHE", scratch / "in-process")
        mp.setattr(parallel, "SPILL_BYTES", 0)
        mp.setattr(fermi_simulate, "CHUNK_PATCHES", 2)
        mp.setattr(cta_simulate, "CHUNK_MAPS", 2)
        results["in-process"] = {case.__name__: case(inputs) for case in CASES}
        with parallel.use(client):
            assert parallel.n_workers() == 1
            mp.setattr(paths, "CACHE", scratch / "1 worker")
            results["1 worker"] = {case.__name__: case(inputs) for case in CASES}
            local.scale(2)
            client.wait_for_workers(2, timeout=120)
            assert parallel.n_workers() == 2
            mp.setattr(paths, "CACHE", scratch / "2 workers")
            before = client.run(lambda dask_worker: dask_worker.state.executed_count)
            results["2 workers"] = {case.__name__: case(inputs) for case in CASES}
            after = client.run(lambda dask_worker: dask_worker.state.executed_count)
    executed = {w: after[w] - before.get(w, 0) for w in after}
    return results, executed, scratch


@pytest.mark.parametrize("case", [c.__name__ for c in CASES])
def test_same_arrays_bit_for_bit_in_process_and_on_one_and_two_workers(runs, case):
    results, _, _ = runs
    ref = results["in-process"][case]
    assert ref and all(len(v) for k, v in ref.items() if k.endswith(("counts", "restored", "flux", "x_pix")))
    for where in ("1 worker", "2 workers"):
        got = results[where][case]
        assert set(got) == set(ref), where
        for key, value in ref.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, (where, key)
            assert np.array_equal(got[key], value, equal_nan=value.dtype.kind in "fc"), (where, key)


def test_both_workers_ran_items_and_the_scratch_results_are_removed(runs):
    _, executed, scratch = runs
    assert len(executed) == 2 and min(executed.values()) > 0, executed
    for mode in ("1 worker", "2 workers"):
        assert (scratch / mode / "parallel").is_dir()  # the workers did write results to disk
        assert not any((scratch / mode / "parallel").iterdir())
    for mode in ("in-process", "1 worker", "2 workers"):  # each mode computed the cached baselines itself
        for kind in ("cta_blind_search", "cta_fit", "ctao_tsmap", "fermi_likelihood_flux"):
            assert len([d for d in (scratch / mode / kind).iterdir() if d.is_dir()]) == 1, (mode, kind)


def test_wcs_goes_on_from_worker_to_worker_exactly(runs, cluster):
    """An item scattered to one worker and used on the other is pickled again
    by the first worker: exactly too."""
    import operator

    from astropy.coordinates import SkyCoord
    from gammapy.maps import WcsGeom

    _, client = cluster
    first, second = sorted(client.scheduler_info()["workers"])
    geom = WcsGeom.create(skydir=SkyCoord(155.63576193929788, 3.266722910761728, unit="deg"), npix=64, binsz=0.025,
                          proj="TAN")
    parallel._register_exact_pickles()
    [held] = client.scatter([geom], workers=[first], direct=True, hash=False)
    crval = client.submit(operator.attrgetter("wcs.wcs.crval"), held, workers=[second], allow_other_workers=False,
                          pure=False).result()
    assert np.array_equal(crval, geom.wcs.wcs.crval)


def test_an_item_error_is_raised_here(cluster):
    _, client = cluster
    with parallel.use(client), pytest.raises(ValueError, match="math domain error"):
        parallel.map_items(math.sqrt, [4.0, -1.0, 9.0], progress=False)
    with parallel.use(client):  # the cluster still works
        assert parallel.map_items(math.sqrt, [4.0, 9.0], progress=False) == [2.0, 3.0]


def _wait_until_idle(local, timeout_s: float = 60.0) -> None:
    """Wait until the (in-process) scheduler holds no task: a client that
    connects while it is still reporting the cancelled keys of an earlier
    fan-out can receive that report batched with its handshake, which
    distributed's client rejects (a race of the library, seen under load)."""
    deadline = time.monotonic() + timeout_s
    while local.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not local.scheduler.tasks, f"scheduler still busy after {timeout_s} s"


def test_existing_cluster_by_address_and_scheduler_file(cluster, monkeypatch, tmp_path):
    local, _ = cluster
    _wait_until_idle(local)
    try:
        monkeypatch.setenv("SKYML_SCHEDULER", local.scheduler_address)
        assert parallel.describe() == f"dask scheduler {local.scheduler_address}"
        assert parallel.map_items(math.sqrt, [1.0, 16.0], progress=False) == [1.0, 4.0]
        # what `dask scheduler --scheduler-file` writes, reduced to what a client reads
        (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler", "address": local.scheduler_address}))
        monkeypatch.setenv("SKYML_SCHEDULER", str(tmp_path / "scheduler.json"))
        assert parallel.map_items(math.sqrt, [25.0], progress=False) == [5.0]
    finally:
        parallel.shutdown()


def test_local_cluster_from_skyml_workers(monkeypatch):
    monkeypatch.setenv("SKYML_WORKERS", "1")
    try:
        assert parallel.describe() == "local dask cluster of 1 worker process"
        assert parallel.map_items(math.sqrt, [1.0, 4.0], progress=False) == [1.0, 2.0]
        assert parallel.n_workers() == 1
    finally:
        parallel.shutdown()
    monkeypatch.delenv("SKYML_WORKERS")
    assert parallel.current_client() is None


def test_scaling_benchmark_refuses_bad_arguments_before_computing(tmp_path, capsys):
    from skyml import benchmark

    folder = tmp_path / "a_folder.json"
    folder.mkdir()
    for argv, fragment in ((["--scaling", "--out", str(folder)], "is not a regular file"),
                           (["--scaling", "--workers", "0"], "must be >= 1"),
                           (["--out", str(tmp_path / "x.json")], "need --scaling"),
                           (["--scaling", "--repeats", "0"], ">= 1 with --scaling"),
                           (["--scaling", "--patches", "two"], "invalid int value")):
        with pytest.raises(SystemExit) as exit_info:
            raise SystemExit(benchmark.main(argv))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("python -m skyml.benchmark: error: ") and fragment in err, err
    assert list(tmp_path.iterdir()) == [folder]


class _FakeFuture:
    def __init__(self, status):
        self.status = status


@pytest.mark.parametrize("status, result, error", [
    ("cancelled", __import__("asyncio").CancelledError(), RuntimeError),
    ("lost", None, RuntimeError),
    ("error", (ValueError, ValueError("math domain error"), None), ValueError),
])
def test_an_item_that_did_not_finish_is_never_a_result(status, result, error):
    """A future read after it was cancelled or lost (status no longer "error")
    raises here instead of handing its CancelledError object back as the
    item's result."""
    with pytest.raises(error):
        parallel._raise_unless_finished(_FakeFuture(status), result, 1)


def test_a_finished_item_passes_even_when_its_result_is_an_exception_object():
    parallel._raise_unless_finished(_FakeFuture("finished"), ValueError("a value"), 0)


@pytest.mark.slow
def test_scaling_benchmark_reports_every_pass_and_the_fastest(monkeypatch):
    from skyml import benchmark

    report = benchmark.scaling((1,), n_patches=2, repeats=2)
    assert report["repeats"] == 2 and report["identical_outputs"] is True
    for task in ("fermi_tsmap", "fermi_simulation"):
        for name in ("in-process", "1 worker"):
            row = report[task][name]
            assert len(row["wall_s_all"]) == 2 and row["wall_s"] == min(row["wall_s_all"])
        assert report[task]["1 worker"]["speedup"] == 1.0


def test_spilled_results_come_back_with_their_types(tmp_path):
    """A dict of arrays and scalars written to disk by a worker reads back with
    the same values and types; np.float64 is also a Python float and must stay
    a NumPy scalar."""
    result = {"image": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.float64(0.1),
              "i64": np.int64(7), "flag": np.bool_(True), "py_float": 0.25, "py_int": 3, "py_bool": False}
    back = parallel._unspill(parallel._spill(result, str(tmp_path), 0))
    assert set(back) == set(result)
    np.testing.assert_array_equal(back["image"], result["image"])
    assert back["image"].dtype == np.float32
    for key, value in result.items():
        if key != "image":
            assert back[key] == value and type(back[key]) is type(value), key


SCRIPT = '''
import numpy as np
from skyml import cache, parallel


def double(x):
    return 2 * x


def main():
    out = cache.cached_arrays("guard_demo", {"n": 4},
                              lambda: {"y": np.array(parallel.map_items(double, range(4), progress=False))})
    print("sum", int(out["y"].sum()))


{call}
'''


@pytest.mark.slow
@pytest.mark.parametrize("guarded", [True, False])
def test_a_script_without_a_main_guard_fails_with_a_reason_instead_of_waiting(tmp_path, guarded):
    """SKYML_WORKERS=2 spawns the workers, which import the script again: without
    `if __name__ == "__main__":` each would reach the cache entry its parent is
    building and wait for the parent's lock for ever. Now the worker refuses with
    a line that says what to do, and the script fails in seconds."""
    import os
    import subprocess
    import sys

    call = 'if __name__ == "__main__":\n    main()' if guarded else "main()"
    script = tmp_path / "fan_out.py"
    script.write_text(SCRIPT.replace("{call}", call))
    env = {**os.environ, "SKYML_WORKERS": "2", "SKYML_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(paths.ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    env.pop("SKYML_SCHEDULER", None)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    if guarded:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "sum 12" in done.stdout
    else:
        assert done.returncode != 0
        assert 'put the script\'s code under `if __name__ == "__main__":`' in done.stderr
