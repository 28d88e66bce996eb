"""The heartbeat: one line about every 30 s inside a stage's build, nothing outside; the rate and time left."""

from tmlib.core.heartbeat import Heartbeat, duration, reporting_to


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_reports_every_interval_with_rate_and_time_left():
    lines, clock = [], Clock()
    with reporting_to(lines.append):
        beat = Heartbeat("fine-tune s0", 100, every=30, clock=clock)
        clock.t = 10
        assert beat(5) is None  # not yet 30 s
        clock.t = 40
        assert beat(20) == "fine-tune s0: step 20 / 100, 0.5 steps/s, 2m40s left"
        clock.t = 50
        assert beat(25) is None  # 10 s after the last line
        clock.t = 71
        beat(40)
    assert len(lines) == 2 and lines[1].startswith("fine-tune s0: step 40 / 100")


def test_a_resumed_loop_counts_its_rate_from_where_it_resumed():
    lines, clock = [], Clock()
    with reporting_to(lines.append):
        beat = Heartbeat("gen", 200, initial=100, every=30, clock=clock)
        clock.t = 30
        beat(130)
    assert lines == ["gen: step 130 / 200, 1 steps/s, 1m10s left"]


def test_silent_outside_a_stage():
    clock = Clock()
    beat = Heartbeat("x", 10, every=0, clock=clock)
    clock.t = 100
    assert beat(5) is None


def test_duration():
    assert [duration(s) for s in (5, 75, 4000)] == ["5s", "1m15s", "1h06m"]


def test_a_store_build_reports_a_long_fit_into_progress_log(tmp_path):
    from tmlib.core.runs import RunStore, Stage

    def build(ctx):
        beat = Heartbeat("loop", 3, every=0)
        for i in range(1, 4):
            beat(i)
        return {"ok": 1}

    store = RunStore(tmp_path, progress=True)
    store.get(Stage("s", {"a": 1}, build, save=lambda v, d: (d / "v.txt").write_text("1"), load=lambda d: 1))
    log = (tmp_path / "progress.log").read_text()
    assert "[s] loop: step 3 / 3" in log
