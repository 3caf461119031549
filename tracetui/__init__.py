"""tracetui: a live terminal monitor for LLM and agent traces.

Never import the UI from here: `tracetui serve --headless` and the scripting
commands must start without loading Textual.
"""

__version__ = "0.1.0"
