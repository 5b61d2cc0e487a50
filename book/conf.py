"""Sphinx configuration of the declearn book (reading mode): the chapters rendered from their
executed copies by myst-nb, never executed here.

``book/build.py`` copies this file, ``_static/`` and the generated pages into one source folder
and runs ``sphinx-build -W`` on it, so every warning (an unresolved link, a missing image) fails
the build.
"""

project = "declearn tutorials"
author = "the declearn authors"
copyright = "the declearn authors, MIT license"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "_extra", "**.ipynb_checkpoints", "jupyter_execute"]

# The notebooks are executed copies: render their outputs as they are.
nb_execution_mode = "off"
nb_output_stderr = "show"
# Markdown outputs (`display(Markdown(...))` tables of results) parsed as MyST: tables and math.
nb_render_markdown_format = "myst"
# Markdown of the chapters: $...$ and $$...$$ math, and `#heading` anchors for links.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4

html_theme = "sphinx_book_theme"
html_title = "declearn tutorials"
html_theme_options = {"show_toc_level": 2, "use_download_button": True}
html_static_path = ["_static"]
html_css_files = ["widget-snapshot.css"]
# The pictures of the widgets' last states (written by build.py): copied as they are.
html_extra_path = ["_extra"]
# The download button offers each page's source: the executed notebook (widgets as pictures).
html_copy_source = True
