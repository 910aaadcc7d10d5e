"""A web page for editing: ``ddim-edit serve`` (Gradio, optional extra ``ddim-edit[web]``).

One idea per module:

- :mod:`.offline`: keep Gradio private and offline (no analytics, no share links, no CDN fonts);
- :mod:`.uploads`: images from the page kept as content-addressed PNG files;
- :mod:`.trajectory_cache`: inverted trajectories per (image, prompt, method, steps, guidance, …);
- :mod:`.attention_gallery`: per-token cross-attention heat maps of a prompt swap, as gallery tiles;
- :mod:`.forms`: the page's text fields (word lists, ``WORD=NUMBER``, painted masks) → edit options;
- :mod:`.messages`: a library error → the one line the CLI prints;
- :mod:`.editor`: the shared model behind a lock, one method per tab (no Gradio in it);
- :mod:`.app`: the Gradio page over an :class:`~.editor.Editor`;
- :mod:`.server`: starting and stopping it on a local port.

Only :mod:`.app` and :mod:`.server` import Gradio, so the rest is usable and testable without it.
"""

from .editor import Editor, EditorSettings, PageResult  # noqa: F401
from .trajectory_cache import TrajectoryCache  # noqa: F401
