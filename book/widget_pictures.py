"""Widgets as pictures of their last state, for a book read without a kernel.

An executed notebook shows a widget as an output holding only a reference,
``{"application/vnd.jupyter.widget-view+json": {"model_id": ...}}``; what the widget looked like
is in the notebook's metadata, ``metadata.widgets["application/vnd.jupyter.widget-state+json"]``
(nbclient saves the last state of every widget model there, and each binary value, such as an
``Image``'s PNG bytes, as a base64 *buffer* next to the model's state). A static page cannot run
the widget, so :func:`picture_widgets` rewrites the notebook:

* every widget output becomes one ``text/html`` output: a ``<div class="widget-snapshot">``
  laid out like the widget (``HBox`` a row, ``VBox`` a column), its ``Image`` children as
  ``<img>`` pictures (the bytes handed to ``save_image``, which stores them and says where
  from the page), and its controls drawn disabled with their last values (a slider's position
  and number, a dropdown's choice, a progress bar's fill, an ``HTML`` widget's text);
* the widget state is dropped from the metadata, so no page asks for the widget JavaScript.

Our widgets (``widgets/``) draw matplotlib figures into ``ipywidgets.Image`` as PNG, so their
last picture is exactly what the reader would have seen at the end of a Run All.
"""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Callable

__all__ = ["WIDGET_STATE", "WIDGET_VIEW", "WidgetStateError", "picture_widgets"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_MODEL_REF = "IPY_MODEL_"
_IMAGE_EXTENSIONS = {"png": "png", "svg+xml": "svg", "svg": "svg", "jpeg": "jpg", "jpg": "jpg",
                     "gif": "gif", "webp": "webp"}
_BOXES = {"HBoxModel": "row", "VBoxModel": "column", "BoxModel": "row", "GridBoxModel": "row",
          "AccordionModel": "column", "TabModel": "column", "StackModel": "column"}
_SLIDERS = {"IntSliderModel", "FloatSliderModel", "FloatLogSliderModel", "IntRangeSliderModel",
            "FloatRangeSliderModel", "SelectionSliderModel", "SelectionRangeSliderModel"}
_CHOICES = {"DropdownModel", "RadioButtonsModel", "SelectModel", "ComboboxModel"}
_TEXTS = {"TextModel", "TextareaModel", "IntTextModel", "FloatTextModel", "BoundedIntTextModel",
          "BoundedFloatTextModel", "PasswordModel", "DatePickerModel", "ColorPickerModel"}
#: Controls a reader would have moved: a snapshot holding one says it is a picture of a widget.
_INTERACTIVE = (_SLIDERS | _CHOICES | _TEXTS
                | {"ToggleButtonsModel", "SelectMultipleModel", "CheckboxModel",
                   "ToggleButtonModel", "ButtonModel", "PlayModel"})

#: ``save_image(data, extension, name)`` stores an image and returns its ``src`` on the page.
SaveImage = Callable[[bytes, str, str], str]


class WidgetStateError(ValueError):
    """A widget output whose saved state is missing or broken."""


def picture_widgets(nb: dict, save_image: SaveImage, *, name: str = "widget") -> int:
    """Replace, in place, every widget output of notebook ``nb`` (nbformat 4, as a dict) by a
    static ``text/html`` picture of its last state and drop the widget state from the metadata.

    ``save_image(data, extension, name)`` receives each ``Image`` widget's bytes, its file
    extension (``png``, ``svg``...) and a unique file name (``name`` plus the model id) and
    returns the ``src`` to write in the page. Returns the number of widget outputs replaced.
    Raises :class:`WidgetStateError` when a widget output has no saved state (a notebook
    executed without ``store_widget_state``, or saved by a front end that drops it).
    """
    widgets_meta = nb.get("metadata", {}).pop("widgets", None) or {}
    state = (widgets_meta.get(WIDGET_STATE) or {}).get("state", {})
    drawer = _Drawer(state, save_image, name)
    replaced = 0
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            model_id = view.get("model_id", "")
            if model_id not in state:
                raise WidgetStateError(
                    f"{name}: cell {index} shows widget {model_id!r}, but the notebook has no "
                    "saved state for it; execute the notebook with nbclient (which stores "
                    "widget state by default) or save it from JupyterLab with 'Save Widget "
                    "State Automatically' on")
            plain = output["data"].get("text/plain", "")
            title = (plain if isinstance(plain, str) else "".join(plain)).split("(", 1)[0]
            output["data"] = {"text/html": drawer.snapshot(model_id, title.strip()),
                              "text/plain": f"[{title.strip() or 'widget'}: last state]"}
            output.setdefault("metadata", {})
            replaced += 1
    return replaced


def _model_id(ref: object) -> str | None:
    return ref[len(_MODEL_REF):] if isinstance(ref, str) and ref.startswith(_MODEL_REF) else None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " – ".join(_fmt(v) for v in value)
    return str(value)


class _Drawer:
    """Draws the widget models of one notebook's saved state as static HTML."""

    def __init__(self, state: dict, save_image: SaveImage, name: str) -> None:
        self.state, self.save_image, self.name = state, save_image, name
        self.saved_outputs = 0

    def snapshot(self, model_id: str, title: str) -> str:
        self.interactive = False
        body = self.draw(model_id, depth=0)
        note = ('<div class="ws-note">A widget, shown as it was at the end of the run: run the '
                "chapter in JupyterLab to move its controls.</div>" if self.interactive else "")
        return (f'<div class="widget-snapshot" data-widget-model="{html.escape(model_id)}" '
                f'data-widget="{html.escape(title)}">{body}{note}</div>')

    def model(self, model_id: str) -> tuple[str, dict]:
        entry = self.state.get(model_id)
        if entry is None:
            raise WidgetStateError(f"{self.name}: widget {model_id!r} refers to model "
                                   "that the saved widget state does not hold")
        return entry.get("model_name") or entry["state"].get("_model_name", ""), entry

    def hidden(self, state: dict) -> bool:
        layout = self.state.get(_model_id(state.get("layout")) or "", {}).get("state", {})
        return layout.get("display") == "none" or layout.get("visibility") == "hidden"

    def layout_style(self, state: dict) -> str:
        layout = self.state.get(_model_id(state.get("layout")) or "", {}).get("state", {})
        return "".join(f"{key.replace('_', '-')}:{layout[key]};" for key in
                       ("width", "max_width", "height") if layout.get(key))

    def draw(self, model_id: str, depth: int) -> str:
        if depth > 50:
            raise WidgetStateError(f"{self.name}: widget {model_id!r} nests too deep (a cycle?)")
        kind, entry = self.model(model_id)
        state = entry["state"]
        if self.hidden(state):
            return ""
        if kind in _INTERACTIVE:
            self.interactive = True
        if kind in _BOXES:
            children = "".join(self.draw(child, depth + 1) for child in
                               map(_model_id, state.get("children", [])) if child)
            return f'<div class="ws-box ws-{_BOXES[kind]}">{children}</div>'
        if kind == "ImageModel":
            return self.image(model_id, entry)
        if kind == "OutputModel":
            return self.outputs(state.get("outputs", []))
        return self.control(kind, state)

    def image(self, model_id: str, entry: dict) -> str:
        state = entry["state"]
        fmt = str(state.get("format", "png")).lower()
        extension = _IMAGE_EXTENSIONS.get(fmt)
        if extension is None:
            raise WidgetStateError(f"{self.name}: Image widget {model_id!r} has format {fmt!r}; "
                                   f"known formats: {', '.join(sorted(_IMAGE_EXTENSIONS))}")
        data = _buffer(entry, "value")
        if not data:
            return '<span class="ws-empty">(empty image)</span>'
        src = self.save_image(data, extension, f"{self.name}-{model_id}.{extension}")
        style = self.layout_style(state) or "max-width:100%;"
        return (f'<img class="ws-image" src="{html.escape(src)}" alt="the widget\'s picture" '
                f'style="{html.escape(style)}height:auto;">')

    def outputs(self, outputs: list) -> str:
        parts = []
        for out in outputs:
            if out.get("output_type") == "stream":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                parts.append(f"<pre>{html.escape(text)}</pre>")
                continue
            data = out.get("data", {})
            image = next((m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in data),
                         None)
            if image:
                raw = "".join(data[image]) if isinstance(data[image], list) else data[image]
                body = raw.encode() if image == "image/svg+xml" else base64.b64decode(raw)
                ext = _IMAGE_EXTENSIONS[image.split("/")[1]]
                self.saved_outputs += 1
                src = self.save_image(body, ext, f"{self.name}-output-{self.saved_outputs}.{ext}")
                parts.append(f'<img class="ws-image" src="{html.escape(src)}" alt="an output">')
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(''.join(data['text/plain']))}</pre>")
        return f'<div class="ws-box ws-column">{"".join(parts)}</div>'

    def control(self, kind: str, s: dict) -> str:
        label = (f'<span class="ws-label">{html.escape(str(s["description"]))}</span>'
                 if s.get("description") else "")
        if kind in ("HTMLModel", "HTMLMathModel"):
            return f'<div class="ws-html">{label}{s.get("value", "")}</div>'
        if kind == "LabelModel":
            return f'<span class="ws-text">{html.escape(str(s.get("value", "")))}</span>'
        if kind in _SLIDERS:
            value = _fmt(s.get("value", ""))
            if kind.startswith("Selection"):
                labels = s.get("_options_labels", [])
                value = " – ".join(labels[i] for i in _indices(s.get("index")) if i < len(labels))
            bar = (f'<input type="range" disabled min="{s.get("min", 0)}" max="{s.get("max", 100)}"'
                   f' step="any" value="{s.get("value")}">'
                   if isinstance(s.get("value"), (int, float)) else "")
            return (f'<span class="ws-control">{label}{bar}'
                    f'<span class="ws-value">{html.escape(value)}</span></span>')
        if kind in ("FloatProgressModel", "IntProgressModel"):
            return (f'<span class="ws-control">{label}<progress max="{s.get("max", 100)}" '
                    f'value="{s.get("value", 0)}"></progress></span>')
        if kind in _CHOICES | {"SelectMultipleModel", "ToggleButtonsModel"}:
            labels = [str(x) for x in s.get("_options_labels", [])]
            chosen = set(_indices(s.get("index")))
            if kind == "ToggleButtonsModel":
                buttons = "".join(
                    f'<span class="ws-toggle{" ws-selected" if i in chosen else ""}">'
                    f"{html.escape(text)}</span>" for i, text in enumerate(labels))
                return f'<span class="ws-control">{label}{buttons}</span>'
            # A static list shows the chosen options alone (a scrolled list would hide some).
            shown = [i for i in sorted(chosen) if i < len(labels)]
            options = "".join(f"<option selected>{html.escape(labels[i])}</option>" for i in shown)
            many = f' multiple size="{len(shown)}"' if kind == "SelectMultipleModel" else ""
            return (f'<span class="ws-control">{label}<select disabled{many}>{options}</select>'
                    "</span>")
        if kind in ("CheckboxModel", "ToggleButtonModel"):
            mark = "☑" if s.get("value") else "☐"
            text = html.escape(str(s.get("description", "")))
            return f'<span class="ws-control ws-check">{mark} {text}</span>'
        if kind in ("ButtonModel", "PlayModel"):
            text = s.get("description") or ("▶" if kind == "PlayModel" else "button")
            return f'<button class="ws-button" disabled>{html.escape(str(text))}</button>'
        if kind in _TEXTS:
            return (f'<span class="ws-control">{label}<input type="text" disabled '
                    f'value="{html.escape(_fmt(s.get("value", "")))}"></span>')
        return f'<span class="ws-unknown">[{html.escape(kind or "widget")}]</span>'


def _indices(index: object) -> list[int]:
    if isinstance(index, int):
        return [index]
    if isinstance(index, (list, tuple)):
        return [i for i in index if isinstance(i, int)]
    return []


def _buffer(entry: dict, key: str) -> bytes | None:
    """The bytes saved for ``state[key]``: a buffer (base64 or hex) or, in older files, the
    base64 text itself in the state."""
    for buffer in entry.get("buffers", []):
        if buffer.get("path") == [key]:
            data = buffer.get("data", "")
            try:
                if buffer.get("encoding", "base64") == "hex":
                    return bytes.fromhex(data)
                return base64.b64decode(data, validate=True)
            except (ValueError, binascii.Error) as err:
                raise WidgetStateError(f"widget buffer {key!r} does not decode: {err}") from None
    value = entry["state"].get(key)
    if isinstance(value, str) and value:
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            return value.encode()
    return None
