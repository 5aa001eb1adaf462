"""A settable clock for the viewer's session store: tests move time instead of sleeping."""


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
