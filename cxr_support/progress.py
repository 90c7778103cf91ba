"""Support code: progress bars that a saved notebook shows finished (lessons need not read this).

In Jupyter, tqdm.auto draws a widget, and a saved notebook keeps the widget's text as it was when
it was drawn: "0%". ``progress_bar`` shows the same widget while the loop runs and then replaces it
with the bar's final line, so the saved notebook (on GitHub, say) shows where it ended. Outside
Jupyter it is plain tqdm on stderr.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


def _draws_widgets(tqdm_class: type) -> bool:
    """True when tqdm.auto chose the Jupyter widget bar (a notebook kernel with ipywidgets)."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return False
    return isinstance(tqdm_class, type) and issubclass(tqdm_class, notebook_tqdm)


def progress_bar(
    iterable: Iterable[Item], total: int | None = None, desc: str = "", unit: str = "it",
    disable: bool = False, leave: bool = True,
) -> Iterator[Item]:
    """Iterate with tqdm.auto's bar.

    In a notebook the widget gives way to its final line (or, if not ``leave``, to nothing) at
    the end.
    """
    from tqdm.auto import tqdm

    if disable or not _draws_widgets(tqdm):
        yield from tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
        return
    from IPython.display import display

    bar = tqdm(iterable, total=total, desc=desc, unit=unit, display=False)
    handle = display(bar.container, display_id=True)
    try:
        yield from bar
    finally:
        # e.g. "decode: 100%|##########| 400/400 [00:03<00:00, 120.5image/s]"
        final = str(bar) if leave else ""
        bar.close()
        if handle is not None:
            handle.update({"text/plain": final}, raw=True)
