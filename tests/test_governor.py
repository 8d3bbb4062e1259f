"""The default thread count (cconv._config.Governor): every core on a quiet machine,
fewer while other processes hold cores, back when they leave; never when the user chose
the count or how OpenMP's threads wait. Results never depend on the count (the
thread-count tests of tests/ops), so only the count is checked here."""
import json
import subprocess
import sys
import textwrap

import pytest

import cconv
from cconv import _config
from conftest import same_cconv_env


def governor(cores):
    return _config.Governor(lambda: cores)


def read(g, now, ratio, preempted):
    """One reading: CPU time `ratio` x threads x wall, with `preempted` preemptions."""
    g._wall, g._cpu, g._preempted = 0.01, ratio * g.threads * 0.01, preempted
    g._read(now)


def test_quiet_readings_keep_every_core():
    g = governor(4)
    for i in range(100):
        read(g, i * 0.01, 0.95, i % 2)  # a preemption now and then: a kernel thread
    for i in range(100):
        # threads asleep between parallel regions lower the CPU time, unpreempted
        read(g, 1 + i * 0.01, 0.5, 0)
    assert g.threads == 4


def test_held_up_twice_drops_to_what_the_process_got():
    g = governor(4)
    read(g, 0.0, 0.5, 3)
    assert g.threads == 4  # one reading may be a hiccup
    read(g, 0.01, 0.5, 3)
    assert g.threads == 2  # 4 threads x 0.5: two cores' worth of CPU time


def test_probes_one_more_thread_backing_off_while_held_up():
    g = governor(2)
    read(g, 0.0, 0.5, 2)
    read(g, 0.01, 0.5, 2)
    assert g.threads == 1
    first_try = 0.01 + g.PROBE_FIRST
    read(g, first_try - 0.001, 1.0, 0)  # one thread: never held up on two cores
    assert g.threads == 1
    tries = []
    now = first_try
    for _ in range(8):  # every try meets the other process again
        read(g, now, 1.0, 0)
        assert g.threads == 2
        tries.append(now)
        read(g, now + 0.001, 0.6, 4)
        assert g.threads == 1
        now = g._next_probe
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps[1] > 1.9 * gaps[0] and max(gaps) <= g.PROBE_MAX + 0.002
    read(g, now, 1.0, 0)
    read(g, now + 0.001, 0.97, 0)  # the other process has left
    assert g.threads == 2 and g._interval == g.PROBE_FIRST
    for i in range(20):
        read(g, now + 0.01 * i, 0.97, 0)
    assert g.threads == 2


def test_a_try_is_kept_when_the_shortfall_is_only_sleep():
    """Right after a try, the woken thread's first window may fall short of its CPU time
    without any preemption: that is no reason to drop it again."""
    g = governor(2)
    read(g, 0.0, 0.5, 2)
    read(g, 0.01, 0.5, 2)
    assert g.threads == 1
    read(g, 1.0, 1.0, 0)
    assert g.threads == 2 and g._probing
    read(g, 1.001, 0.6, 0)
    assert g.threads == 2 and g._interval == g.PROBE_FIRST


def test_follows_a_smaller_affinity():
    cores = [4]
    g = _config.Governor(lambda: cores[0])
    cores[0] = 2
    read(g, 0.0, 1.0, 0)
    assert g.threads == 2 and g.cores == 2


def test_set_num_threads_fixes_the_count(threads):
    cconv.set_num_threads(1)
    assert _config.governor() is _config._FIXED and cconv.get_num_threads() == 1
    cconv.set_num_threads(None)
    if not _config._USER_ENV:
        assert isinstance(_config.governor(), _config.Governor)
    with pytest.raises(TypeError, match="an int or None"):
        cconv.set_num_threads(2.0)


@pytest.mark.parametrize("setting, count", [
    ({"OMP_NUM_THREADS": "1"}, 1), ({"OMP_WAIT_POLICY": "passive"}, None),
    ({"GOMP_SPINCOUNT": "1000"}, None), ({"KMP_BLOCKTIME": "0"}, None)])
def test_openmp_settings_fix_the_count(tmp_path, setting, count):
    code = textwrap.dedent("""
        import io, json, cconv
        from cconv import _config
        out = io.StringIO()
        cconv.show_config(file=out)
        print(json.dumps([_config.governor() is _config._FIXED, cconv.get_num_threads(),
                          _config._visible_cores(), out.getvalue()]))
    """)
    env = same_cconv_env()
    for k in _config.USER_SETTINGS:
        env.pop(k, None)
    env.update(setting)
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fixed, threads, cores, config = json.loads(run.stdout.splitlines()[-1])
    assert fixed and threads == (count or cores)
    (name, value), = setting.items()
    assert f"fixed: {name}={value}" in config


def test_fewer_threads_beside_busy_processes_and_back_after(tmp_path):
    """On the machine itself: as many busy processes as cores make the chapter-10 fit
    drop threads; once they are gone, it comes back to every core."""
    if _config._visible_cores() < 2:
        pytest.skip("one core: there is no count to lower")  # not on CI's 2 cores
    code = textwrap.dedent("""
        import subprocess, sys, time
        import numpy as np
        import cconv
        from cconv import _config, presets
        rng = np.random.default_rng(0)
        x = rng.random((256, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, 256)
        model = presets.build_fixed()
        gov = _config.governor()
        assert isinstance(gov, _config.Governor), gov

        def fit_until(done, seconds=60):
            seen, end = set(), time.monotonic() + seconds
            while time.monotonic() < end:
                model.fit(x, y, batch_size=128, epochs=1, verbose=0)
                seen.add(gov.threads)
                if done():
                    return seen
            raise SystemExit(f"no change in {seconds} s: saw {seen}")

        fit_until(lambda: True)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(gov.cores)]
        try:
            fit_until(lambda: gov.threads < gov.cores)
        finally:
            for b in busy:
                b.kill()
                b.wait()
        fit_until(lambda: gov.threads == gov.cores)
        print("ok")
    """)
    env = same_cconv_env()
    for k in _config.USER_SETTINGS:
        env.pop(k, None)
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr + run.stdout
