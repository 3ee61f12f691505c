"""YAML documents that remember where they came from, for the checks of .ci/validate_deploy.py.

A `Doc` keeps a document's data with its node tree, so that any problem found in the data can be
reported at its file and line; `load_yaml` reports YAML that does not parse and keys given twice
(which parsers otherwise resolve silently). A `Report` collects the problems. Nothing here knows
what the documents mean.
"""

import contextlib
from pathlib import Path

import yaml


class Report:
    """The problems found, each as `file:line: object place: message`."""

    def __init__(self, root):
        self.root = Path(root)
        self.problems = []

    def error(self, where, message):
        self.problems.append(f"{where}: {message}")

    @contextlib.contextmanager
    def guard(self, where, what):
        """Runs a check on data of a shape nobody meant (a list where a mapping belongs): the
        error that raises becomes a problem at `where`, and the other checks go on."""
        try:
            yield
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            self.error(
                where,
                f"cannot check {what} ({type(e).__name__}: {e}): its shape is wrong, "
                "see the other problems reported for it",
            )

    def show(self, path):
        """`path` as the reader finds it: relative to the project root when inside it."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


# --- YAML with line numbers and duplicate keys ------------------------------------------------
class Doc:
    """One YAML document: its data, its node tree (for line numbers) and the file it is in."""

    def __init__(self, file, shown, data, node):
        self.file, self.shown, self.data, self.node = Path(file), shown, data, node

    def line(self, path=()):
        if self.node is None:
            return None
        node, line = self.node, self.node.start_mark.line + 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                found = [v for k, v in node.value if k.value == key]
                if not found:
                    break
                node = found[0]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                break
            line = node.start_mark.line + 1
        return line

    def where(self, path=()):
        """`file:line: Kind/name field.path`, the line being that of `path` (or of the nearest
        part of it the document has)."""
        name = ""
        if (
            isinstance(self.data, dict)
            and isinstance(self.data.get("metadata"), dict)
            and self.data["metadata"].get("name")
        ):
            name = f"{self.data.get('kind')}/{self.data['metadata']['name']}"
        at = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
        line = self.line(path)
        location = f"{self.shown}:{line}" if line else self.shown
        detail = " ".join(part for part in (name, at) if part)
        return f"{location}: {detail}" if detail else location


# libyaml's parser when PyYAML was built with it (several times faster), else PyYAML's own.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_duplicate_keys(shown, node, report):
    """Keys given twice in one mapping (YAML parsers keep the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key, value in node.value:
            if key.value in seen:
                report.error(
                    f"{shown}:{key.start_mark.line + 1}",
                    f"duplicate key {key.value!r} (first at line {seen[key.value]})",
                )
            seen[key.value] = key.start_mark.line + 1
            check_duplicate_keys(shown, value, report)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_duplicate_keys(shown, item, report)


def load_yaml(path, report):
    """The documents of a YAML file, each checked for duplicate keys; none when it does not parse."""
    shown = report.show(path)
    text = Path(path).read_text()
    try:
        nodes = list(yaml.compose_all(text, Loader=LOADER))
        datas = list(yaml.load_all(text, Loader=LOADER))
    except yaml.YAMLError as e:
        report.error(shown, f"not valid YAML: {e}")
        return []
    docs = []
    for node, data in zip(nodes, datas, strict=True):
        if node is None or data is None:
            continue
        check_duplicate_keys(shown, node, report)
        docs.append(Doc(path, shown, data, node))
    return docs
